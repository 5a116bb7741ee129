"""``GET /c/{token}``: record a click and redirect to the store."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from libs.runtime.deps import ProducerDep
from libs.schemas import ClickRecorded
from services.tracker import logic
from services.tracker.metrics import CLICKS, PUBLISH_FAILURES
from services.tracker.store import TrackerCache

log = logging.getLogger(__name__)

router = APIRouter(tags=["tracker"])

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
async def track_click(token: str, request: Request, producer: ProducerDep) -> Response:
    if len(token) > 32:
        return HTMLResponse(NOT_FOUND_PAGE, status_code=404)
    tracker = await _cache(request).get(token)
    if tracker is None:
        CLICKS.labels("unknown").inc()
        return HTMLResponse(NOT_FOUND_PAGE, status_code=404)
    headers = request.headers
    user_agent = headers.get("user-agent")
    click = ClickRecorded(
        app_id=tracker.app_id,
        click_id=uuid.uuid4().hex,
        tracker_token=tracker.token,
        ts=datetime.now(UTC),
        ip=logic.client_ip(
            headers.get("x-forwarded-for"), request.client.host if request.client else None
        ),
        user_agent=user_agent[: logic.MAX_USER_AGENT] if user_agent else None,
        accept_language=(headers.get("accept-language") or "")[:256] or None,
        referer=(headers.get("referer") or "")[:4096] or None,
        adid=(request.query_params.get("adid") or "")[:128] or None,
        is_bot=logic.is_bot(user_agent),
    )
    # The redirect must not wait for the broker: enqueue and count failures later.
    future = await producer.publish_nowait(click)
    future.add_done_callback(_count_failure)
    CLICKS.labels("bot" if click.is_bot else "ok").inc()
    return RedirectResponse(
        logic.redirect_url(tracker.store_url, click.click_id, tracker.token), status_code=302
    )


def _count_failure(future: object) -> None:
    exc = getattr(future, "exception", lambda: None)()
    if exc is not None:
        PUBLISH_FAILURES.inc()
        log.error("click not published", extra={"error": repr(exc)})
