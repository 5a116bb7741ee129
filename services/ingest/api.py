"""The event API: ``POST /v1/events`` (SDK key) and the server-to-server input
``POST /v1/s2s/events`` and ``POST /v1/s2s/verify`` (server key).

Thin: read the body, check the per-key rate limit, call ``logic``, publish, answer.
Every endpoint answers only after Kafka acknowledged each record it publishes; a
request refused (rate limit, bad envelope) publishes nothing.
"""

from __future__ import annotations

import gzip
import time
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from libs.runtime import signing
from libs.runtime.deps import ProducerDep, SettingsDep, get_resources
from libs.runtime.errors import HodhodError, PayloadTooLarge
from libs.runtime.http import client_ip, error_body, error_response
from libs.runtime.kafka import Producer
from libs.runtime.ratelimit import TokenBuckets, retry_after_seconds
from libs.runtime.settings import PlatformSettings
from libs.runtime.signing import Verdict
from libs.runtime.tenancy import SdkAppDep, ServerAppDep, hash_key
from libs.schemas import InstallReported
from services.ingest import logic, store
from services.ingest.metrics import (
    EVENTS,
    RATE_LIMITED,
    RATE_LIMITED_EVENTS,
    SIGNATURES,
    VERIFICATIONS,
)
from services.ingest.store import SigningSettings

SIGNATURE_HEADER = "X-Hodhod-Signature"
TIMESTAMP_HEADER = "X-Hodhod-Timestamp"

router = APIRouter(tags=["ingest"])

MAX_INFLATED_BYTES = 8 * 1_048_576
Source = Literal["sdk", "s2s"]


class Rejected(BaseModel):
    index: int
    field: str | None
    reason: str


class EventsAccepted(BaseModel):
    accepted: int
    rejected: list[Rejected]
    duplicates: int = 0


class VerificationAccepted(BaseModel):
    verification_id: str


_TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "The key's rate limit (events per second) is exhausted; nothing "
        "of the request was accepted. Retry after `Retry-After` seconds.",
        "content": {
            "application/json": {
                "example": error_body("rate_limited", "rate limit of 200 events/s exceeded")
            }
        },
    }
}


async def _json_body(request: Request) -> Any:
    return _decode(request, await request.body())


def _decode(request: Request, body: bytes) -> Any:
    """The JSON value of a request body as sent (gzip inflated, bounded)."""
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = inflater.decompress(body, MAX_INFLATED_BYTES)
            if inflater.unconsumed_tail:
                raise PayloadTooLarge(f"inflated body exceeds {MAX_INFLATED_BYTES} bytes")
        except (zlib.error, gzip.BadGzipFile):
            raise HodhodError("body is not valid gzip", code="malformed_gzip") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HodhodError("request body is not valid JSON", code="malformed_json") from None


def _limiter(request: Request, settings: PlatformSettings) -> TokenBuckets:
    """The process's buckets, made on first use (never at import time)."""
    state = request.app.state
    limiter: TokenBuckets | None = getattr(state, "ingest_rate_limiter", None)
    if limiter is None:
        limiter = TokenBuckets(
            rate_per_s=settings.ingest_rate_per_s, burst=settings.ingest_rate_burst
        )
        state.ingest_rate_limiter = limiter
    return limiter


def _key_digest(request: Request) -> str:
    """The digest of the key the request authenticated with (the tenancy dependency has
    already accepted it): the rate limit is per key, not per app."""
    raw = request.headers.get("x-hodhod-key", "")
    if not raw:
        raw = request.headers.get("authorization", "").partition(" ")[2].strip()
    return hash_key(raw)


def _rate_limited(
    request: Request, settings: PlatformSettings, *, cost: int, source: Source
) -> JSONResponse | None:
    """A 429 answer when the key's bucket lacks ``cost`` tokens, else None (spent)."""
    limiter = _limiter(request, settings)
    wait = limiter.take(_key_digest(request), cost, now=time.monotonic())
    if wait <= 0:
        return None
    RATE_LIMITED.labels(source).inc()
    RATE_LIMITED_EVENTS.labels(source).inc(cost)
    retry_after = retry_after_seconds(wait)
    response = error_response(
        429,
        "rate_limited",
        f"rate limit of {limiter.rate_per_s:g} events/s (burst {limiter.burst}) exceeded "
        f"for this key; nothing was accepted, retry in {retry_after} s",
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


async def _ingest(
    request: Request,
    *,
    app_id: str,
    producer: Producer,
    settings: PlatformSettings,
    source: Source,
) -> EventsAccepted | JSONResponse:
    raw = await request.body()
    body = _decode(request, raw)
    events = logic.batch_events(body, max_batch=settings.ingest_max_batch)
    # An empty batch still costs one token, or empty requests would be free.
    refused = _rate_limited(request, settings, cost=max(1, len(events)), source=source)
    if refused is not None:
        return refused
    sdk = source == "sdk"
    result = logic.parse_batch(
        body,
        app_id=app_id,
        received_at=datetime.now(UTC),
        # A server calls on behalf of users: its own address and agent describe no user.
        ip=client_ip(
            request,
            trust_forwarded_for=settings.trust_forwarded_for,
            hops=settings.forwarded_hops,
        )
        if sdk
        else None,
        user_agent=request.headers.get("user-agent") if sdk else None,
        source=source,
        max_batch=settings.ingest_max_batch,
        max_age=timedelta(days=settings.ingest_max_event_age_days) if sdk else None,
    )
    verdict = await _check_signature(request, app_id, raw) if sdk else None
    if verdict is not None and not verdict.ok:
        return await _refuse_unsigned(producer, result.installs, verdict)
    if verdict is not None:
        result.installs[:] = [i.model_copy(update={"signature": "ok"}) for i in result.installs]
    try:
        await producer.publish_all([*result.events, *result.installs], result.encoded)
    except Exception:
        if verdict is not None and verdict.replay_key is not None:
            await _release(request, app_id, verdict.replay_key)
        raise
    EVENTS.labels("accepted").inc(len(result.events))
    EVENTS.labels("rejected").inc(len(result.rejected))
    return EventsAccepted(
        accepted=len(result.events),
        rejected=[Rejected(index=r.index, field=r.field, reason=r.reason) for r in result.rejected],
        duplicates=result.duplicates,
    )


def _signing(request: Request) -> SigningSettings:
    """The process's signing-settings cache, made on first use."""
    state = request.app.state
    cache: SigningSettings | None = getattr(state, "ingest_signing", None)
    if cache is None:
        cache = SigningSettings(get_resources(request).sessions)
        state.ingest_signing = cache
    return cache


async def _check_signature(request: Request, app_id: str, raw: bytes) -> Verdict | None:
    """The verdict on the request's signature when the app requires signing, else None.

    The signature covers the body exactly as sent (compressed when it was sent
    compressed). The signature is claimed before anything is published (a second use,
    even concurrent, is a replay) and released if publishing fails."""
    config = await _signing(request).of(app_id)
    if not config.required:
        return None
    header = request.headers.get(SIGNATURE_HEADER)
    verdict = signing.verify(
        secrets=config.secrets,
        body=raw,
        timestamp=request.headers.get(TIMESTAMP_HEADER),
        signature=header,
        now=datetime.now(UTC),
    )
    if verdict.ok and verdict.replay_key is not None:
        async with get_resources(request).sessions() as session, session.begin():
            claimed = await store.claim_signature(
                session,
                app_id=app_id,
                signature=verdict.replay_key,
                now=datetime.now(UTC),
                keep=2 * signing.SKEW,
            )
        if not claimed:
            verdict = signing.Verdict(signing.REPLAY)
    SIGNATURES.labels(verdict.code).inc()
    return verdict


async def _release(request: Request, app_id: str, signature: str) -> None:
    async with get_resources(request).sessions() as session, session.begin():
        await store.release_signature(session, app_id=app_id, signature=signature)


async def _refuse_unsigned(
    producer: Producer, installs: list[InstallReported], verdict: Verdict
) -> JSONResponse:
    """401 for a request of a signing app without a valid signature. Its events are
    refused, but its installs go on to attribution marked with the verdict, so they are
    stored as fraud (``bad_signature``) and counted against their tracker — except a
    replay's: the original request's installs were counted already."""
    if verdict.code != signing.REPLAY and installs:
        await producer.publish_all(
            [i.model_copy(update={"signature": verdict.code}) for i in installs]
        )
    return error_response(
        401,
        "bad_signature",
        f"this app requires signed SDK requests; the signature is {verdict.code} "
        f"(HMAC-SHA256 of body + '.' + {TIMESTAMP_HEADER}, within "
        f"{int(signing.SKEW.total_seconds())} s, each signature used once); nothing was "
        "accepted",
        field=SIGNATURE_HEADER if verdict.code != signing.STALE else TIMESTAMP_HEADER,
    )


@router.post(
    "/v1/events", operation_id="post_events", response_model=EventsAccepted, responses=_TOO_MANY
)
async def post_events(
    request: Request, app_id: SdkAppDep, producer: ProducerDep, settings: SettingsDep
) -> Any:
    """Accept an SDK batch (events up to ``HODHOD_INGEST_MAX_EVENT_AGE_DAYS`` old).

    Answers after every accepted record is acknowledged by Kafka.
    """
    return await _ingest(request, app_id=app_id, producer=producer, settings=settings, source="sdk")


@router.post(
    "/v1/s2s/events",
    operation_id="post_s2s_events",
    response_model=EventsAccepted,
    responses=_TOO_MANY,
)
async def post_s2s_events(
    request: Request, app_id: ServerAppDep, producer: ProducerDep, settings: SettingsDep
) -> Any:
    """Events sent by the app's backend (server key): the SDK body and answer, any past
    ``ts`` accepted (backfill and import), source ``s2s``."""
    return await _ingest(request, app_id=app_id, producer=producer, settings=settings, source="s2s")


@router.post(
    "/v1/s2s/verify",
    operation_id="post_s2s_verify",
    status_code=202,
    response_model=VerificationAccepted,
    responses=_TOO_MANY,
)
async def post_s2s_verify(
    request: Request, app_id: ServerAppDep, producer: ProducerDep, settings: SettingsDep
) -> Any:
    """Publish ``UserVerified`` to ``verifications`` and answer once Kafka acknowledged it.

    Idempotent when the caller sends ``ts``: a retry publishes the same
    ``verification_id``, which consumers deduplicate.
    """
    body = await _json_body(request)
    refused = _rate_limited(request, settings, cost=1, source="s2s")
    if refused is not None:
        return refused
    verified = logic.parse_verification(body, app_id=app_id, now=datetime.now(UTC))
    await producer.publish(verified)
    VERIFICATIONS.inc()
    return VerificationAccepted(verification_id=verified.verification_id)
