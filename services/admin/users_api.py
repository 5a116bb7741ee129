"""The admin API's users (admin token): look a profile up by user key or device, edit
it, erase it, and the CRM timeline. Thin: parse, call, answer.

Profiles are the segmenter's: admin reads them but never writes them. An edit and an
erasure are published as records the segmenter applies (``users.py``), and answered
202 once the broker has them: the change shows within the segmenter's lag (normally
well under a second). Waiting for it here would tie admin's answer to the consumer's
health; a 202 names what will happen and an id to find it by.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from libs.runtime.deps import ClickHouseDep, ProducerDep, SessionDep
from libs.runtime.errors import InvalidInput, NotFound
from libs.runtime.tables import Profile
from libs.runtime.tenancy import AdminAppDep
from libs.schemas.base import UserKey
from services.admin import logic, store, users, warehouse
from services.admin.schemas import ErasureRead, ProfileEditRead, ProfileRead, ProfileUpdate

router = APIRouter(prefix="/admin/v1", tags=["admin"])

MAX_USER_KEY = 130  # ``d:`` + a device id of up to 128


def _checked_key(user_key: str) -> UserKey:
    if not 1 <= len(user_key) <= MAX_USER_KEY or any(
        ord(c) < 32 or ord(c) == 127 for c in user_key
    ):
        raise InvalidInput(f"must be 1 to {MAX_USER_KEY} printable characters", field="user_key")
    return user_key


async def _profile(
    session: SessionDep, app_id: str, user_key: str, by: Literal["user_key", "device"]
) -> Profile:
    key = user_key
    if by == "device":
        key = await store.user_key_of_device(session, app_id=app_id, device_id=user_key)
    profile = await store.get_profile(session, app_id=app_id, user_key=key)
    if profile is None:
        what = "device" if by == "device" else "user"
        raise NotFound(f"no {what} {user_key}", field="user_key")
    return profile


@router.get("/users/{user_key}", operation_id="get_user")
async def get_user(
    user_key: str,
    app_id: AdminAppDep,
    session: SessionDep,
    by: Annotated[Literal["user_key", "device"], Query()] = "user_key",
) -> ProfileRead:
    """The profile of ``user_key`` (a user id, or ``d:<device_id>`` for a device no one
    logged in on); with ``?by=device`` the path names a device id and the answer is the
    profile that device's records fold into (its user's, once someone logged in on it)."""
    profile = await _profile(session, app_id, user_key, by)
    key = profile.user_key
    return ProfileRead(
        user_key=key,
        user_id=profile.user_id,
        attributes=profile.attributes,
        first_seen=profile.first_seen,
        last_seen=profile.last_seen,
        platform=profile.platform,
        app_version=profile.app_version,
        os_version=profile.os_version,
        device_model=profile.device_model,
        locale=profile.locale,
        timezone=profile.timezone,
        attribution=profile.attribution,
        sessions=profile.sessions,
        purchases=profile.purchases,
        revenue=profile.revenue,
        events=profile.events,
        segments=await store.segment_ids_of(session, app_id=app_id, user_key=key),
        devices=await store.devices_of(session, app_id=app_id, user_key=key),
        push_permission=profile.push_permission,
        push_tokens=list(profile.push_tokens),
        web_push=list(profile.web_push),
        phone=profile.phone,
        email=profile.email,
        opt_outs=list(profile.opt_outs),
    )


@router.patch("/users/{user_key}", status_code=202, operation_id="update_user")
async def update_user(
    user_key: str,
    body: ProfileUpdate,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> ProfileEditRead:
    """Edit a profile: attributes set/unset, phone, email, opt-outs. 202 once the edit
    is on the ``events`` topic; the segmenter applies it like the user's own
    ``$attributes``/``$opt_out``/``$opt_in`` (an attribute written later by the app
    wins). 404 for an unknown user; 422 naming the field for a bad or empty edit."""
    applies = users.edit_props(body.model_dump(mode="json", exclude_unset=True))
    await _profile(session, app_id, user_key, "user_key")
    edit_id = f"ed_{uuid.uuid4().hex}"
    await producer.publish_all(
        users.edit_events(
            app_id=app_id,
            user_key=user_key,
            applies=applies,
            edit_id=edit_id,
            now=datetime.now(UTC),
        )
    )
    return ProfileEditRead(edit_id=edit_id, user_key=user_key, applies=applies)


@router.delete("/users/{user_key}", status_code=202, operation_id="erase_user")
async def erase_user(user_key: str, app_id: AdminAppDep, producer: ProducerDep) -> ErasureRead:
    """Erase a user: the segmenter deletes the profile, the aliases of its devices, its
    counters, recent events and memberships (announcing the exits); attribution deletes
    its installs, their clicks, links, verification and postback records; ingest's
    warehouse writer deletes its raw rows in ClickHouse. 202 once the request is on
    ``config-changes``; ``GET`` answers 404 when the segmenter is done. Idempotent:
    erasing an unknown or already erased user is accepted and erases nothing."""
    erasure_id = f"er_{uuid.uuid4().hex}"
    key = _checked_key(user_key)
    await producer.publish(
        users.erasure(app_id=app_id, user_key=key, erasure_id=erasure_id, now=datetime.now(UTC))
    )
    return ErasureRead(erasure_id=erasure_id, user_key=key)


@router.get("/users/{user_key}/timeline", operation_id="get_user_timeline")
async def get_user_timeline(
    user_key: str,
    app_id: AdminAppDep,
    session: SessionDep,
    ch: ClickHouseDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """The CRM view: latest events (device events before login included), attribution,
    message receipts, and the user's most active local hours."""
    data = await warehouse.timeline(ch, app_id=app_id, user_key=user_key, limit=limit)
    profile = await store.get_profile(session, app_id=app_id, user_key=user_key)
    if profile is None and not data["events"]:
        raise NotFound(f"no user {user_key}", field="user_key")
    default_tz = profile.timezone if profile and profile.timezone else None
    hours = logic.active_hours(
        [(e["timezone"] or default_tz, e["ts"]) for e in data["events"] if e["name"] == "$open"],
        default_tz or logic.DEFAULT_TIMEZONE,
    )
    return {"user_key": user_key, **data, "most_active_hours": hours}
