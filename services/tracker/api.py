"""``GET /c/{token}``: record a click and redirect to the store."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from libs.runtime.http import client_ip
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


def _cache(request: Request) -> TrackerCache:
    cache: TrackerCache | None = getattr(request.app.state, "tracker_cache", None)
    if cache is None:
        cache = TrackerCache(request.app.state.resources.sessions)
        request.app.state.tracker_cache = cache
    return cache


@router.get(
    "/c/{token}", operation_id="track_click", response_class=RedirectResponse, status_code=302
)
async def track_click(token: str, request: Request) -> Response:
    """Answers 302 to the tracker's store URL, or a 404 page; never waits for Kafka."""
    tracker = await _active(request, token)
    if tracker is None:
        return HTMLResponse(NOT_FOUND_PAGE, status_code=404)
    click = await _record(request, tracker, "click")
    target = click.redirect_url or tracker.store_url
    return RedirectResponse(logic.redirect_url(target, click.click_id, tracker.token), 302)


@router.get("/i/{token}", operation_id="track_impression")
async def track_impression(token: str, request: Request) -> Response:
    """An ad view, for view-through attribution: answers a 1×1 transparent GIF (so the
    URL works as an ad pixel), or 404; never waits for Kafka."""
    tracker = await _active(request, token)
    if tracker is None:
        return Response(status_code=404)
    await _record(request, tracker, "impression")
    return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})


async def _active(request: Request, token: str) -> Any:
    if not logic.TOKEN.fullmatch(token):
        return None
    tracker = await _cache(request).get(token)
    if tracker is None:
        CLICKS.labels("unknown").inc()
    return tracker


async def _record(request: Request, tracker: Any, kind: str) -> ClickRecorded:
    # The process's resources straight from the app, not through dependencies: the
    # click path is the hottest of all, and resolving them costs a tenth of it (measured).
    resources: Resources = request.app.state.resources
    producer, settings = resources.producer, resources.settings
    headers = request.headers
    user_agent = headers.get("user-agent")
    click = ClickRecorded(
        app_id=tracker.app_id,
        click_id=uuid.uuid4().hex,
        tracker_token=tracker.token,
        ts=datetime.now(UTC),
        ip=client_ip(
            request,
            trust_forwarded_for=settings.trust_forwarded_for,
            hops=settings.forwarded_hops,
        ),
        user_agent=logic.clean(user_agent, logic.MAX_USER_AGENT),
        accept_language=logic.clean(headers.get("accept-language"), 256),
        referer=logic.clean(headers.get("referer"), 4096),
        adid=logic.clean(request.query_params.get("adid"), 128),
        redirect_url=logic.allowed_redirect(
            logic.clean(request.query_params.get("redirect"), 2048),
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
    CLICKS.labels("bot" if click.is_bot else kind).inc()
    return click


def _count_failure(future: asyncio.Future[object]) -> None:
    if future.cancelled():
        _count_failure_now(asyncio.CancelledError())
    elif future.exception() is not None:
        _count_failure_now(future.exception())


def _count_failure_now(exc: BaseException | None) -> None:
    PUBLISH_FAILURES.inc()
    log.error("click not published", extra={"error": repr(exc)})
