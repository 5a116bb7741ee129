"""``GET /c/{token}``: record a click and redirect to the store; ``GET /i/{token}``: an
ad view answered with a pixel.

Both are the platform's hottest paths, so they are ``FastRoute``s (``FAST_ROUTES``):
answered ahead of FastAPI's routing and middleware from the ASGI scope. The FastAPI
routes below are their twins — the same answers, listed in OpenAPI, and serving what the
fast path leaves to FastAPI (see ``libs.runtime.http.App``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import Scope

from libs.runtime.http import Answer, FastRoute, answer_response, forwarded_client_ip
from libs.runtime.resources import Resources
from libs.schemas import ClickRecorded
from services.tracker import logic
from services.tracker.metrics import CLICKS, PUBLISH_FAILURES
from services.tracker.store import TrackerCache

log = logging.getLogger(__name__)

router = APIRouter(tags=["tracker"])

ENQUEUE_TIMEOUT_S = 0.5
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
NOT_FOUND_PAGE = "<!doctype html><title>Link not found</title><h1>This link is not active.</h1>"
# What Starlette's RedirectResponse leaves unquoted in ``Location``.
LOCATION_SAFE = ":/%#?=@[]!$&'()*+,;"


def _answer_of(response: Response) -> Answer:
    return response.status_code, list(response.raw_headers), bytes(response.body)


# The constant answers, headers exactly as Starlette's responses make them.
NOT_FOUND = _answer_of(HTMLResponse(NOT_FOUND_PAGE, status_code=404))
NO_PIXEL = _answer_of(Response(status_code=404))
PIXEL_ANSWER = _answer_of(
    Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})
)
_REDIRECT_LENGTH = (b"content-length", b"0")


def _cache(app: Any) -> TrackerCache:
    cache: TrackerCache | None = getattr(app.state, "tracker_cache", None)
    if cache is None:
        cache = TrackerCache(app.state.resources.sessions)
        app.state.tracker_cache = cache
    return cache


async def click_answer(scope: Scope, token: str) -> Answer:
    """302 to the tracker's store URL (or its allow-listed ``redirect``) carrying the
    click id in ``referrer``, or the 404 page; never waits for Kafka. Publishes one
    ``ClickRecorded``; raises only what reading the tracker raises (Postgres down)."""
    app = scope["app"]
    tracker = await _active(app, token)
    if tracker is None:
        return NOT_FOUND
    click = await _record(app, scope, tracker, "click")
    target = click.redirect_url or tracker.store_url
    location = quote(logic.redirect_url(target, click.click_id, tracker.token), safe=LOCATION_SAFE)
    return 302, [_REDIRECT_LENGTH, (b"location", location.encode("latin-1"))], b""


async def impression_answer(scope: Scope, token: str) -> Answer:
    """A 1×1 transparent GIF (so the URL works as an ad pixel), or an empty 404;
    publishes one ``ClickRecorded`` of kind ``impression``; never waits for Kafka."""
    app = scope["app"]
    tracker = await _active(app, token)
    if tracker is None:
        return NO_PIXEL
    await _record(app, scope, tracker, "impression")
    return PIXEL_ANSWER


FAST_ROUTES = (
    FastRoute("/c/", "/c/{token}", click_answer),
    FastRoute("/i/", "/i/{token}", impression_answer),
)


@router.get(
    "/c/{token}", operation_id="track_click", response_class=RedirectResponse, status_code=302
)
async def track_click(token: str, request: Request) -> Response:
    """Answers 302 to the tracker's store URL, or a 404 page; never waits for Kafka."""
    return answer_response(await click_answer(request.scope, token))


@router.get("/i/{token}", operation_id="track_impression")
async def track_impression(token: str, request: Request) -> Response:
    """An ad view, for view-through attribution: answers a 1×1 transparent GIF (so the
    URL works as an ad pixel), or 404; never waits for Kafka."""
    return answer_response(await impression_answer(request.scope, token))


async def _active(app: Any, token: str) -> Any:
    if not logic.TOKEN.fullmatch(token):
        return None
    tracker = await _cache(app).get(token)
    if tracker is None:
        _count("unknown")
    return tracker


# The request headers a click records, by name; each the first of its name, as
# Starlette's ``Headers.get`` reads them.
_HEADER_SLOTS = {b"user-agent": 0, b"accept-language": 1, b"referer": 2, b"x-forwarded-for": 3}


def _headers(raw: list[tuple[bytes, bytes]]) -> list[str | None]:
    found: list[str | None] = [None, None, None, None]
    for name, value in raw:
        slot = _HEADER_SLOTS.get(name)
        if slot is not None and found[slot] is None:
            found[slot] = value.decode("latin-1")
    return found


async def _record(app: Any, scope: Scope, tracker: Any, kind: str) -> ClickRecorded:
    # The process's resources straight from the app, not through dependencies: the
    # click path is the hottest of all, and resolving them costs a tenth of it (measured).
    resources: Resources = app.state.resources
    producer, settings = resources.producer, resources.settings
    user_agent, accept_language, referer, forwarded_for = _headers(scope["headers"])
    query: bytes = scope["query_string"]
    # Starlette's QueryParams: latin-1, blank values kept, the last of a name wins.
    params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}
    client = scope.get("client")
    click = ClickRecorded(
        app_id=tracker.app_id,
        click_id=uuid.uuid4().hex,
        tracker_token=tracker.token,
        ts=datetime.now(UTC),
        ip=forwarded_client_ip(
            forwarded_for,
            client[0] if client else None,
            trust_forwarded_for=settings.trust_forwarded_for,
            hops=settings.forwarded_hops,
        ),
        user_agent=logic.clean(user_agent, logic.MAX_USER_AGENT),
        accept_language=logic.clean(accept_language, 256),
        referer=logic.clean(referer, 4096),
        adid=logic.clean(params.get("adid"), 128),
        redirect_url=logic.allowed_redirect(
            logic.clean(params.get("redirect"), 2048),
            list(tracker.redirect_domains or []),
        )
        if kind == "click"
        else None,
        is_bot=logic.is_bot(user_agent),
        kind=kind,
    )
    # The answer must not wait for the broker: enqueue and count failures later. If the
    # broker cannot even take the record, the user still gets where they were going.
    try:
        async with asyncio.timeout(ENQUEUE_TIMEOUT_S):
            future = await producer.publish_nowait(click)
    except Exception as exc:
        _count_failure_now(exc)
    else:
        future.add_done_callback(_count_failure)
    _count("bot" if click.is_bot else kind)
    return click


# Counter children by outcome, resolved on first use (a series appears once counted).
_OUTCOMES: dict[str, Any] = {}


def _count(outcome: str) -> None:
    child = _OUTCOMES.get(outcome)
    if child is None:
        child = _OUTCOMES[outcome] = CLICKS.labels(outcome)
    child.inc()


def _count_failure(future: asyncio.Future[object]) -> None:
    if future.cancelled():
        _count_failure_now(asyncio.CancelledError())
    elif future.exception() is not None:
        _count_failure_now(future.exception())


def _count_failure_now(exc: BaseException | None) -> None:
    PUBLISH_FAILURES.inc()
    log.error("click not published", extra={"error": repr(exc)})
