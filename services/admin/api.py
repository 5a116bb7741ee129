"""The admin API (admin token): trackers and delivery receipts (users: ``users_api``;
segments: ``segments_api``; journeys and broadcasts: ``journeys_api``). Thin: parse,
call the store, answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from libs.runtime.deps import ClickHouseDep, ProducerDep, SessionDep, SettingsDep
from libs.runtime.errors import InvalidInput, NotFound
from libs.runtime.tables import Tracker
from libs.runtime.tenancy import AdminAppDep
from services.admin import logic, store, warehouse
from services.admin.changes import announce as _changed
from services.admin.schemas import (
    DeliveryList,
    DeliveryRead,
    TrackerCreate,
    TrackerRead,
    TrackerUpdate,
)

router = APIRouter(prefix="/admin/v1", tags=["admin"])


def _click_url(request: Request, public_url: str | None, token: str) -> str:
    base = (public_url or str(request.base_url)).rstrip("/")
    return f"{base}/c/{token}"


def _tracker_read(request: Request, public_url: str | None, t: Tracker) -> TrackerRead:
    return TrackerRead(
        token=t.token,
        click_url=_click_url(request, public_url, t.token),
        name=t.name,
        channel=t.channel,
        store_url=t.store_url,
        network=t.network,
        campaign=t.campaign,
        adgroup=t.adgroup,
        creative=t.creative,
        status=t.status,
        created_at=t.created_at,
        click_window_hours=t.click_window_hours,
        fingerprint_window_hours=t.fingerprint_window_hours,
        view_window_hours=t.view_window_hours,
        counting=t.counting,
        cost_model=t.cost_model,
        cost_amount=t.cost_amount,
        cost_currency=t.cost_currency,
        postback_urls=list(t.postback_urls or []),
        postback_events=list(t.postback_events or []),
        event_postback_urls=dict(t.event_postback_urls or {}),
        redirect_domains=list(t.redirect_domains or []),
    )


@router.post("/trackers", status_code=201, operation_id="create_tracker")
async def create_tracker(
    body: TrackerCreate,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
    settings: SettingsDep,
) -> TrackerRead:
    values = body.model_dump(mode="json")
    values["cost_amount"] = body.cost_amount
    tracker = await store.create_tracker(session, app_id=app_id, values=values)
    _changed(request, producer, app_id, "tracker", tracker.token)
    return _tracker_read(request, settings.public_url, tracker)


@router.get("/trackers", operation_id="list_trackers")
async def list_trackers(
    request: Request, app_id: AdminAppDep, session: SessionDep, settings: SettingsDep
) -> dict[str, list[TrackerRead]]:
    rows = await store.list_trackers(session, app_id=app_id)
    return {"items": [_tracker_read(request, settings.public_url, t) for t in rows]}


@router.get("/trackers/{token}", operation_id="get_tracker")
async def get_tracker(
    token: str, request: Request, app_id: AdminAppDep, session: SessionDep, settings: SettingsDep
) -> TrackerRead:
    tracker = await store.get_tracker(session, app_id=app_id, token=token)
    if tracker is None:
        raise NotFound(f"no tracker {token}", field="token")
    return _tracker_read(request, settings.public_url, tracker)


@router.patch("/trackers/{token}", operation_id="update_tracker")
async def update_tracker(
    token: str,
    body: TrackerUpdate,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
    settings: SettingsDep,
) -> TrackerRead:
    """Change the fields sent. The click URL (token) never changes; the tracker service
    sees the change within its cache TTL (10 s)."""
    tracker = await store.get_tracker(session, app_id=app_id, token=token)
    if tracker is None:
        raise NotFound(f"no tracker {token}", field="token")
    changes = body.model_dump(mode="json", exclude_unset=True)
    if "cost_amount" in changes:
        changes["cost_amount"] = body.cost_amount
    merged = {c: getattr(tracker, c) for c in ("cost_model", "cost_amount", "cost_currency")}
    merged.update({k: v for k, v in changes.items() if k in merged})
    if any(v is not None for v in merged.values()) and any(v is None for v in merged.values()):
        raise InvalidInput("cost needs cost_model, amount and currency", field="cost_model")
    for name in (
        "name",
        "store_url",
        "click_window_hours",
        "fingerprint_window_hours",
        "view_window_hours",
        "counting",
        "postback_urls",
        "postback_events",
        "event_postback_urls",
        "redirect_domains",
    ):
        if name in changes and changes[name] is None:
            raise InvalidInput("cannot be null", field=name)
    unchosen = logic.unchosen_postback_events(
        changes.get("postback_events", tracker.postback_events or []),
        changes.get("event_postback_urls", tracker.event_postback_urls or {}),
    )
    if unchosen:
        raise InvalidInput(
            "the event is not in postback_events", field=f"event_postback_urls.{unchosen[0]}"
        )
    await store.update_tracker(session, tracker=tracker, values=changes)
    _changed(request, producer, app_id, "tracker", token, "updated")
    return _tracker_read(request, settings.public_url, tracker)


@router.delete("/trackers/{token}", operation_id="archive_tracker")
async def archive_tracker(
    token: str,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
    settings: SettingsDep,
) -> TrackerRead:
    """Archive: the link stops redirecting (404 page); reports keep its history."""
    tracker = await store.get_tracker(session, app_id=app_id, token=token)
    if tracker is None:
        raise NotFound(f"no tracker {token}", field="token")
    await store.update_tracker(session, tracker=tracker, values={"status": "archived"})
    _changed(request, producer, app_id, "tracker", token, "deleted")
    return _tracker_read(request, settings.public_url, tracker)


@router.get("/deliveries", operation_id="list_deliveries")
async def list_deliveries(
    app_id: AdminAppDep,
    ch: ClickHouseDep,
    user_key: Annotated[str, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    rows = await warehouse.deliveries_of(ch, app_id=app_id, user_key=user_key, limit=limit)
    return DeliveryList(items=[DeliveryRead(**row) for row in rows])
