"""Apple Push Notification service over HTTP/2 with token-based (ES256) authentication.

``POST {host}/3/device/{token}`` with ``authorization: bearer <provider token>``: a JWT
signed with the app's .p8 key (ES256, header ``kid`` = key id, claims ``iss`` = team
id and ``iat``). Apple accepts a token for an hour and refuses refreshes more often than
every 20 minutes, so one token is reused and replaced after 50 minutes (or at once
when APNs answers ExpiredProviderToken and the token is older than 20 minutes). Each
app has its own HTTP/2 connection (a connection's tokens must come from one team).

Headers: ``apns-push-type`` (alert, or background for a silent push), ``apns-topic``
(the bundle id), ``apns-priority`` (10 high, 5 normal and always 5 for background),
``apns-expiration`` (now + ttl; 0 = deliver now or never), ``apns-collapse-id`` (at most
64 bytes) and ``apns-id`` (a UUID derived from the job id, echoed in the answer).

| APNs answer | Outcome |
|---|---|
| 200 | sent, ``provider_message_id`` = ``apns-id`` |
| 410 Unregistered / ExpiredToken | token_invalid, ``invalid_since`` = the answer's timestamp |
| 400 BadDeviceToken | token_invalid |
| 400 DeviceTokenNotForTopic, BadTopic, MissingTopic, TopicDisallowed | misconfigured |
| 400 other reasons, 404, 405 | rejected |
| 403 ExpiredProviderToken | a new token and one more try; auth if refused again |
| 403 InvalidProviderToken and other 403s | auth |
| 413 PayloadTooLarge (or a payload over 4 KB, not sent) | payload_too_large |
| 429 TooManyRequests / TooManyProviderTokenUpdates | quota, transient |
| 500, 503 (InternalServerError, ServiceUnavailable, Shutdown) | unavailable, transient |
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.dispatcher.providers.base import (
    AUTH,
    MISCONFIGURED,
    PAYLOAD_TOO_LARGE,
    QUOTA,
    REJECTED,
    TOKEN_INVALID,
    UNAVAILABLE,
    Address,
    Message,
    Outcome,
    failed,
    retry_after,
    sent,
)
from services.dispatcher.providers.http import HttpOptions, client, transport_failure

HOSTS = {
    "production": "https://api.push.apple.com",
    "sandbox": "https://api.sandbox.push.apple.com",
}
MAX_PAYLOAD = 4096
TOKEN_REUSE_S = 50 * 60  # Apple: valid for 60 minutes
MIN_REFRESH_S = 20 * 60  # Apple: TooManyProviderTokenUpdates below this
APNS_ID_NS = uuid.UUID("6f1d3c2a-8b4e-4f5a-9c7d-1e2f3a4b5c6d")
JOB_KEY = "hodhod_job_id"
MISCONFIGURED_REASONS = frozenset(
    {"DeviceTokenNotForTopic", "BadTopic", "MissingTopic", "TopicDisallowed"}
)


class ProviderTokens:
    """The ES256 provider token of one APNs key: made on first use, reused for up to
    ``TOKEN_REUSE_S``, replaced early only when APNs says it expired (and it is old
    enough that Apple allows a refresh). ``clock`` is seconds since the epoch."""

    def __init__(
        self,
        *,
        key_pem: str,
        key_id: str,
        team_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("an APNs key is a P-256 EC private key (the .p8 file)")
        self._key = key
        self._key_id = key_id
        self._team_id = team_id
        self._clock = clock
        self._token: str | None = None
        self._issued_at = 0.0
        self.issued = 0  # how many tokens were made (tests watch the reuse)

    def current(self) -> str:
        now = self._clock()
        if self._token is None or now - self._issued_at >= TOKEN_REUSE_S:
            self._issue(now)
        assert self._token is not None
        return self._token

    def expired(self, token: str) -> bool:
        """APNs refused ``token`` as expired: make a new one if Apple allows it now.
        True when the next ``current()`` differs from ``token``."""
        now = self._clock()
        if token != self._token:
            return True  # another send already replaced it
        if now - self._issued_at < MIN_REFRESH_S:
            return False
        self._issue(now)
        return True

    def _issue(self, now: float) -> None:
        self._token = jwt.encode(
            {"iss": self._team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self._key_id},
        )
        self._issued_at = now
        self.issued += 1


def apns_request(
    message: Message, *, topic: str, now: datetime | None = None
) -> tuple[dict[str, str], bytes]:
    """The headers (without authorization) and JSON payload of one notification. Pure."""
    payload: dict[str, Any] = {k: v for k, v in message.data.items() if k != "aps"}
    payload[JOB_KEY] = message.job_id
    if message.url:
        payload.setdefault("url", message.url)
    headers = {"apns-topic": topic, "apns-id": str(uuid.uuid5(APNS_ID_NS, message.job_id))}
    if message.silent:
        payload["aps"] = {"content-available": 1}
        headers["apns-push-type"] = "background"
        headers["apns-priority"] = "5"
    else:
        alert: dict[str, str] = {"body": message.body}
        if message.title:
            alert["title"] = message.title
        aps: dict[str, Any] = {"alert": alert, "sound": "default"}
        if message.category:
            aps["thread-id"] = message.category
        if message.url or message.data:
            aps["mutable-content"] = 1
        payload["aps"] = aps
        headers["apns-push-type"] = "alert"
        headers["apns-priority"] = "10" if message.priority == "high" else "5"
    if message.ttl_s is not None:
        moment = now or datetime.now(UTC)
        expiry = 0 if message.ttl_s <= 0 else int(moment.timestamp()) + message.ttl_s
        headers["apns-expiration"] = str(expiry)
    if message.collapse_key:
        headers["apns-collapse-id"] = message.collapse_key.encode()[:64].decode("utf-8", "ignore")
    return headers, orjson.dumps(payload)


def apns_outcome(status: int, body: bytes, headers: httpx.Headers | dict[str, str]) -> Outcome:
    """Map one APNs answer to an Outcome (the table in the module docstring). Pure."""
    if status == 200:
        return sent("apns", headers.get("apns-id"))
    try:
        answer = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        answer = {}
    reason = str(answer.get("reason", "")) if isinstance(answer, dict) else ""
    described = f"APNs {status} {reason}".strip()
    wait = retry_after(headers.get("retry-after"))
    if status == 410:
        stamp = answer.get("timestamp") if isinstance(answer, dict) else None
        since = (
            datetime.fromtimestamp(stamp / 1000, UTC) if isinstance(stamp, int | float) else None
        )
        return failed("apns", TOKEN_INVALID, described, token_invalid=True, invalid_since=since)
    if reason == "BadDeviceToken":
        return failed("apns", TOKEN_INVALID, described, token_invalid=True)
    if reason in MISCONFIGURED_REASONS:
        return failed("apns", MISCONFIGURED, described)
    if status == 413 or reason == "PayloadTooLarge":
        return failed("apns", PAYLOAD_TOO_LARGE, described)
    if status == 429:
        return failed("apns", QUOTA, described, transient=True, retry_after_s=wait)
    if status >= 500:
        return failed("apns", UNAVAILABLE, described, transient=True, retry_after_s=wait)
    if status == 403:
        return failed("apns", AUTH, described)
    return failed("apns", REJECTED, described)


class ApnsProvider:
    """One app's APNs sender, with its own HTTP/2 connection (closed by ``aclose``).
    ``base_url`` overrides Apple's host for the environment (tests, a proxy)."""

    name = "apns"

    def __init__(
        self,
        *,
        key_pem: str,
        key_id: str,
        team_id: str,
        topic: str,
        environment: str = "production",
        options: HttpOptions,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = ProviderTokens(key_pem=key_pem, key_id=key_id, team_id=team_id, clock=clock)
        self._topic = topic
        self._base = (base_url or HOSTS[environment]).rstrip("/")
        self._client = client(options, http2=True)

    async def send(self, message: Message, address: Address) -> Outcome:
        if address.kind != "apns":
            raise ValueError(f"the APNs provider cannot send to a {address.kind} address")
        headers, payload = apns_request(message, topic=self._topic)
        if len(payload) > MAX_PAYLOAD:
            return failed(
                self.name,
                PAYLOAD_TOO_LARGE,
                f"payload of {len(payload)} bytes; APNs takes at most {MAX_PAYLOAD}",
            )
        url = f"{self._base}/3/device/{address.value}"
        for attempt in range(2):
            token = self.tokens.current()
            try:
                response = await self._client.post(
                    url, content=payload, headers={**headers, "authorization": f"bearer {token}"}
                )
            except httpx.HTTPError as exc:
                return transport_failure(self.name, exc)
            expired = response.status_code == 403 and b"ExpiredProviderToken" in response.content
            if expired and attempt == 0 and self.tokens.expired(token):
                continue
            break
        return apns_outcome(response.status_code, response.content, response.headers)

    async def aclose(self) -> None:
        await self._client.aclose()
