"""Journeys and broadcasts (admin token): CRUD, validation, lifecycle, broadcast preview.

Every write validates the journey with ``libs.journeys.validate`` (422 naming the path:
``definition.nodes.2.next``) and that every segment and template it references exists
(422 naming the path that references it), stores a new version when the trigger or the
definition changed, and announces the change on ``config-changes`` — the journey
service holds, releases or ends runs and plans schedules from it. Dry runs and stats
are served by the journey service itself (it owns runs: ``services/journey/api.py``).

Lifecycle: draft → active ⇄ paused → archived; a broadcast is cancelled instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from libs.journeys.definition import DefinitionError, Journey
from libs.journeys.validate import dump, parse, references
from libs.rules.language import SegmentCond
from libs.runtime.deps import ProducerDep, SessionDep
from libs.runtime.errors import Conflict, InvalidInput, NotFound
from libs.runtime.tables import Journey as JourneyRow
from libs.runtime.tenancy import AdminAppDep
from services.admin import store
from services.admin.changes import announce
from services.admin.schemas import (
    BroadcastCreate,
    BroadcastList,
    BroadcastPreview,
    BroadcastRead,
    JourneyCheck,
    JourneyCreate,
    JourneyList,
    JourneyRead,
    JourneyUpdate,
    JourneyValidation,
)

router = APIRouter(prefix="/admin/v1", tags=["journeys"])

# status → the transitions allowed from it
TRANSITIONS: dict[str, dict[str, str]] = {
    "activate": {"draft": "active", "paused": "active"},
    "pause": {"active": "paused"},
    "resume": {"paused": "active"},
    "archive": {"draft": "archived", "active": "archived", "paused": "archived"},
}


def checked(trigger: Any, definition: Any) -> Journey:
    """The parsed journey, or ``InvalidInput`` naming the bad path."""
    try:
        return parse(trigger, definition)
    except DefinitionError as exc:
        raise InvalidInput(exc.reason, field=exc.path) from None


async def check_references(
    session: AsyncSession, app_id: str, journey: Journey, raw_trigger: Any = None
) -> None:
    """``InvalidInput`` naming the path of the first reference to a segment or template
    that does not exist (a legacy trigger's own field name for its segment)."""
    refs = references(journey)
    segments, templates = await store.missing_references(
        session, app_id=app_id, segments=set(refs.segments), templates=set(refs.templates)
    )
    if segments:
        first = min(segments, key=lambda s: refs.segments[s])
        path = refs.segments[first]
        if (
            path == "trigger.segment"
            and isinstance(raw_trigger, dict)
            and "segment_entered" in raw_trigger
        ):
            path = "trigger.segment_entered"
        raise InvalidInput(f"no segment {first}", field=path)
    if templates:
        first = min(templates, key=lambda t: refs.templates[t])
        raise InvalidInput(f"no template {first}", field=refs.templates[first])


def _read(j: JourneyRow) -> JourneyRead:
    return JourneyRead(
        id=j.id,
        name=j.name,
        trigger=j.trigger,
        definition=j.definition,
        status=j.status,
        version=j.version,
        created_at=j.created_at,
        updated_at=j.updated_at,
    )


async def _journey(session: AsyncSession, app_id: str, journey_id: str) -> JourneyRow:
    journey = await store.get_journey(session, app_id=app_id, journey_id=journey_id, kind="journey")
    if journey is None:
        raise NotFound(f"no journey {journey_id}", field="journey_id")
    return journey


@router.post("/journeys", status_code=201, operation_id="create_journey")
async def create_journey(
    body: JourneyCreate,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> JourneyRead:
    journey = checked(body.trigger, body.definition)
    await check_references(session, app_id, journey, body.trigger)
    row = await store.create_journey(
        session,
        app_id=app_id,
        name=body.name,
        trigger=dump(journey.trigger),
        definition=dump(journey.definition),
        status=body.status,
    )
    announce(request, producer, app_id, "journey", row.id)
    return _read(row)


@router.post("/journeys/validate", operation_id="validate_journey")
async def validate_journey(
    body: JourneyCheck, app_id: AdminAppDep, session: SessionDep
) -> JourneyValidation:
    """Check a journey without saving it: 422 naming the first bad path, else the
    journey in its current form and what it references."""
    journey = checked(body.trigger, body.definition)
    await check_references(session, app_id, journey, body.trigger)
    refs = references(journey)
    return JourneyValidation(
        valid=True,
        trigger=dump(journey.trigger),
        definition=dump(journey.definition),
        segments=sorted(refs.segments),
        templates=sorted(refs.templates),
    )


@router.get("/journeys", operation_id="list_journeys")
async def list_journeys(
    app_id: AdminAppDep,
    session: SessionDep,
    status: Annotated[Literal["draft", "active", "paused", "archived"] | None, Query()] = None,
) -> JourneyList:
    rows = await store.list_journeys(session, app_id=app_id, kind="journey", status=status)
    return JourneyList(items=[_read(r) for r in rows])


@router.get("/journeys/{journey_id}", operation_id="get_journey")
async def get_journey(journey_id: str, app_id: AdminAppDep, session: SessionDep) -> JourneyRead:
    return _read(await _journey(session, app_id, journey_id))


@router.patch("/journeys/{journey_id}", operation_id="update_journey")
async def update_journey(
    journey_id: str,
    body: JourneyUpdate,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> JourneyRead:
    """Change the name, trigger or definition. A new trigger or definition is a new
    version: users who entered before stay on the version they entered."""
    row = await _journey(session, app_id, journey_id)
    if row.status == "archived":
        raise Conflict("an archived journey does not change", field="journey_id")
    trigger = body.trigger if body.trigger is not None else row.trigger
    definition = body.definition if body.definition is not None else row.definition
    journey = checked(trigger, definition)
    await check_references(session, app_id, journey)
    await store.update_journey(
        session,
        journey=row,
        name=body.name,
        trigger=dump(journey.trigger),
        definition=dump(journey.definition),
    )
    announce(request, producer, app_id, "journey", row.id, "updated")
    return _read(row)


async def _transition(
    request: Request,
    producer: ProducerDep,
    session: AsyncSession,
    app_id: str,
    journey_id: str,
    action: str,
) -> JourneyRead:
    row = await _journey(session, app_id, journey_id)
    target = TRANSITIONS[action].get(row.status)
    if target is None:
        raise Conflict(f"a {row.status} journey cannot {action}", field="status")
    if target == "active":
        # What it references may have been archived since it was saved.
        await check_references(session, app_id, checked(row.trigger, row.definition))
    await store.set_journey_status(session, journey=row, status=target)
    announce(
        request,
        producer,
        app_id,
        "journey",
        row.id,
        "deleted" if target == "archived" else "updated",
    )
    return _read(row)


@router.post("/journeys/{journey_id}/activate", operation_id="activate_journey")
async def activate_journey(
    journey_id: str,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> JourneyRead:
    return await _transition(request, producer, session, app_id, journey_id, "activate")


@router.post("/journeys/{journey_id}/pause", operation_id="pause_journey")
async def pause_journey(
    journey_id: str,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> JourneyRead:
    """No one enters and waiting runs are held (timers not fired, events not applied)
    until resumed."""
    return await _transition(request, producer, session, app_id, journey_id, "pause")


@router.post("/journeys/{journey_id}/resume", operation_id="resume_journey")
async def resume_journey(
    journey_id: str,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> JourneyRead:
    """Held runs go on: a timer that fell due during the pause fires at once."""
    return await _transition(request, producer, session, app_id, journey_id, "resume")


@router.post("/journeys/{journey_id}/archive", operation_id="archive_journey")
async def archive_journey(
    journey_id: str,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> JourneyRead:
    """For good: every run still under way exits; stats stay readable."""
    return await _transition(request, producer, session, app_id, journey_id, "archive")


# --- broadcasts ---------------------------------------------------------------------------


def broadcast_journey(body: BroadcastCreate) -> tuple[dict[str, Any], dict[str, Any]]:
    """The broadcast as a journey: a schedule trigger and one send node."""
    trigger: dict[str, Any] = {
        "type": "schedule",
        "segment": body.segment,
        "at": body.at.isoformat(),
    }
    for name in ("every", "local_time", "per_second"):
        if getattr(body, name) is not None:
            trigger[name] = getattr(body, name)
    if body.until is not None:
        trigger["until"] = body.until.isoformat()
    send: dict[str, Any] = {"id": "send", "type": "send", "channel": body.channel}
    for name in ("content", "template_id", "category", "expires_after"):
        if getattr(body, name) is not None:
            send[name] = getattr(body, name)
    if body.fallback:
        send["fallback"] = body.fallback
    definition = {
        "start": "send",
        "nodes": [send],
        "entry": {"reentry": "always", "max_concurrent": 100},
    }
    return trigger, definition


def _path(field: str) -> str:
    """A broadcast's field for the journey path an error names."""
    for prefix, name in (("definition.nodes.0.", ""), ("trigger.", "")):
        if field.startswith(prefix):
            return name + field[len(prefix) :]
    return field


def _broadcast_read(row: JourneyRow) -> BroadcastRead:
    nodes = row.definition.get("nodes") or [{}]
    return BroadcastRead(
        id=row.id,
        name=row.name,
        status=row.status,
        trigger=row.trigger,
        send=nodes[0],
        created_at=row.created_at,
    )


@router.post("/broadcasts", status_code=201, operation_id="create_broadcast")
async def create_broadcast(
    body: BroadcastCreate,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> BroadcastRead:
    trigger, definition = broadcast_journey(body)
    try:
        journey = checked(trigger, definition)
        await check_references(session, app_id, journey)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field=_path(exc.field or "")) from None
    row = await store.create_journey(
        session,
        app_id=app_id,
        name=body.name,
        trigger=dump(journey.trigger),
        definition=dump(journey.definition),
        kind="broadcast",
        prefix="bc",
    )
    announce(request, producer, app_id, "broadcast", row.id)
    return _broadcast_read(row)


@router.post("/broadcasts/preview", operation_id="preview_broadcast")
async def preview_broadcast(
    app_id: AdminAppDep,
    session: SessionDep,
    segment: Annotated[str, Query(min_length=1, max_length=32)],
) -> BroadcastPreview:
    """How many members the segment has now and how many each channel reaches."""
    missing, _ = await store.missing_references(
        session, app_id=app_id, segments={segment}, templates=set()
    )
    if missing:
        raise InvalidInput(f"no segment {segment}", field="segment")
    count, by_channel, _ = await store.preview(
        session, app_id=app_id, node=SegmentCond(segment), now=datetime.now(UTC), sample=0
    )
    return BroadcastPreview(count=count, by_channel=by_channel)


@router.get("/broadcasts", operation_id="list_broadcasts")
async def list_broadcasts(app_id: AdminAppDep, session: SessionDep) -> BroadcastList:
    rows = await store.list_journeys(session, app_id=app_id, kind="broadcast")
    return BroadcastList(items=[_broadcast_read(r) for r in rows])


@router.get("/broadcasts/{broadcast_id}", operation_id="get_broadcast")
async def get_broadcast(
    broadcast_id: str, app_id: AdminAppDep, session: SessionDep
) -> BroadcastRead:
    row = await store.get_journey(session, app_id=app_id, journey_id=broadcast_id, kind="broadcast")
    if row is None:
        raise NotFound(f"no broadcast {broadcast_id}", field="broadcast_id")
    return _broadcast_read(row)


@router.post("/broadcasts/{broadcast_id}/cancel", operation_id="cancel_broadcast")
async def cancel_broadcast(
    broadcast_id: str,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> BroadcastRead:
    """Stop it: no further firing, and members not yet sent to are not (runs waiting for
    their local time or throttle slot exit). Messages already sent stay sent."""
    row = await store.get_journey(session, app_id=app_id, journey_id=broadcast_id, kind="broadcast")
    if row is None:
        raise NotFound(f"no broadcast {broadcast_id}", field="broadcast_id")
    if row.status == "cancelled":
        return _broadcast_read(row)
    await store.set_journey_status(session, journey=row, status="cancelled")
    announce(request, producer, app_id, "broadcast", row.id, "deleted")
    return _broadcast_read(row)
