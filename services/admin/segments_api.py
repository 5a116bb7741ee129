"""Segments (admin token): CRUD, rule validation, previews, member export, and a user's
memberships. Thin: parse, call ``segments`` (rules) and ``store`` (Postgres), answer.

How a segment change reaches the segmenter: it reads the ``segments`` table for every
batch it folds, so a new, changed or archived rule applies to the next event of any user
at once; its scheduler recomputes in bulk, at its next tick, the memberships of a new or
changed rule (users who send no event enter or leave with the usual SegmentChanged
records) and deletes those of an archived segment. ``config-changes`` announces every
change as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.rules.language import Node, is_time_dependent, referenced_segments
from libs.runtime.deps import ProducerDep, ResourcesDep, SessionDep
from libs.runtime.errors import Conflict, InvalidInput, NotFound
from libs.runtime.tables import Segment
from libs.runtime.tenancy import AdminAppDep
from services.admin import logic, segments, store
from services.admin.changes import announce
from services.admin.schemas import (
    MAX_SAMPLE,
    PreviewRead,
    PreviewRequest,
    RuleCheck,
    RuleCheckRead,
    SampleUser,
    SegmentCreate,
    SegmentRead,
    SegmentUpdate,
    TrackerComparison,
    TrackerGroup,
    UserSegmentRead,
    UserSegments,
)

router = APIRouter(prefix="/admin/v1", tags=["segments"])

# Members per page of the CSV export (one short query each, keyset on user key).
EXPORT_PAGE = 1000
EXPORT_COLUMNS = (
    "user_key",
    "user_id",
    "entered_at",
    "first_seen",
    "last_seen",
    "platform",
    "tracker_token",
)

Sample = Annotated[int, Query(ge=0, le=MAX_SAMPLE)]
GroupBy = Annotated[Literal["tracker"] | None, Query()]
RankBy = Annotated[Literal["matching", "share"], Query()]


def _segment_read(s: Segment) -> SegmentRead:
    return SegmentRead(
        id=s.id,
        name=s.name,
        rule=s.rule,
        status=s.status,
        created_at=s.created_at,
        updated_at=s.updated_at,
    )


async def _segment(session: AsyncSession, app_id: str, segment_id: str) -> Segment:
    segment = await store.get_segment(session, app_id=app_id, segment_id=segment_id)
    if segment is None:
        raise NotFound(f"no segment {segment_id}", field="segment_id")
    return segment


@router.post("/segments", status_code=201, operation_id="create_segment")
async def create_segment(
    body: SegmentCreate,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> SegmentRead:
    """Referenced segments must be active segments of this app, and references must not
    loop; a bad rule is a 422 naming the path of the bad node (``rule.all.1.op``)."""
    segments.checked_rule(body.rule, await store.active_rules(session, app_id=app_id))
    segment = await store.create_segment(session, app_id=app_id, name=body.name, rule=body.rule)
    announce(request, producer, app_id, "segment", segment.id)
    return _segment_read(segment)


@router.get("/segments", operation_id="list_segments")
async def list_segments(app_id: AdminAppDep, session: SessionDep) -> dict[str, list[SegmentRead]]:
    return {"items": [_segment_read(s) for s in await store.list_segments(session, app_id=app_id)]}


@router.post("/segments/validate", operation_id="validate_segment_rule")
async def validate_rule(body: RuleCheck, app_id: AdminAppDep, session: SessionDep) -> RuleCheckRead:
    """Check a rule as create and update do, without saving anything: 200 with what the
    rule references, or 422 with the path of the bad node and why."""
    node = segments.checked_rule(body.rule, await store.active_rules(session, app_id=app_id))
    return RuleCheckRead(
        valid=True,
        references=sorted(referenced_segments(node)),
        time_dependent=is_time_dependent(node),
    )


@router.post("/segments/preview", operation_id="preview_segment_rule")
async def preview_rule(
    body: PreviewRequest, app_id: AdminAppDep, session: SessionDep
) -> PreviewRead | TrackerComparison:
    """Who an unsaved rule matches now (checked as on create): the count, a sample and
    the reach per channel; or, with ``group_by: "tracker"``, the goal comparison of the
    app's trackers."""
    node = segments.checked_rule(body.rule, await store.active_rules(session, app_id=app_id))
    return await _preview(session, app_id, node, body.sample, body.group_by, body.rank_by)


@router.get("/segments/{segment_id}", operation_id="get_segment")
async def get_segment(segment_id: str, app_id: AdminAppDep, session: SessionDep) -> SegmentRead:
    return _segment_read(await _segment(session, app_id, segment_id))


@router.patch("/segments/{segment_id}", operation_id="update_segment")
async def update_segment(
    segment_id: str,
    body: SegmentUpdate,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> SegmentRead:
    """Rename and/or replace the rule (checked as on create, and it must not come to
    reference this segment). The new rule decides every event the segmenter folds from
    the commit on; users who send none enter or leave at the scheduler's next tick
    (``HODHOD_SEGMENT_SCHEDULER_INTERVAL_S``), with SegmentChanged records as usual. An
    archived segment cannot change (409)."""
    segment = await _segment(session, app_id, segment_id)
    if segment.status != "active":
        raise Conflict(f"segment {segment_id} is archived", field="segment_id", code="archived")
    changes = body.model_dump(exclude_unset=True)
    for name in ("name", "rule"):
        if name in changes and changes[name] is None:
            raise InvalidInput("cannot be null", field=name)
    if "rule" in changes:
        rules = await store.active_rules(session, app_id=app_id)
        segments.checked_rule(changes["rule"], rules, segment_id=segment_id)
    if changes:
        await store.update_segment(session, segment=segment, values=changes)
        announce(request, producer, app_id, "segment", segment_id, "updated")
    return _segment_read(segment)


@router.delete("/segments/{segment_id}", operation_id="archive_segment")
async def archive_segment(
    segment_id: str,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> SegmentRead:
    """Archive: the row stays (status ``archived``) for history. The segmenter stops
    evaluating it at once and deletes its memberships at its scheduler's next tick,
    without SegmentChanged records. Refused (409, naming them) while an active segment's
    rule or a journey that is not archived references it. Archiving twice is a no-op."""
    segment = await _segment(session, app_id, segment_id)
    if segment.status == "archived":
        return _segment_read(segment)
    others, journeys = await store.referrer_candidates(session, app_id=app_id)
    segments.refuse_if_referenced(
        segment_id, segments.segment_referrers(segment_id, segments=others, journeys=journeys)
    )
    await store.update_segment(session, segment=segment, values={"status": "archived"})
    announce(request, producer, app_id, "segment", segment_id, "deleted")
    return _segment_read(segment)


@router.get("/segments/{segment_id}/preview", operation_id="preview_segment")
async def preview_segment(
    segment_id: str,
    app_id: AdminAppDep,
    session: SessionDep,
    sample: Sample = 10,
    group_by: GroupBy = None,
    rank_by: RankBy = "matching",
) -> PreviewRead | TrackerComparison:
    """The saved rule evaluated now (see ``POST /segments/preview``). The count is what
    the rule matches at this instant; the stored memberships (``members.csv``) follow it
    within a scheduler tick."""
    segment = await _segment(session, app_id, segment_id)
    node = segments.checked_rule(segment.rule, None)
    return await _preview(session, app_id, node, sample, group_by, rank_by)


async def _preview(
    session: AsyncSession,
    app_id: str,
    node: Node,
    sample: int,
    group_by: Literal["tracker"] | None,
    rank_by: Literal["matching", "share"],
) -> PreviewRead | TrackerComparison:
    now = datetime.now(UTC)
    if group_by == "tracker":
        total, rows = await store.tracker_goal(session, app_id=app_id, node=node, now=now)
        names = {t.token: t.name for t in await store.list_trackers(session, app_id=app_id)}
        groups = segments.tracker_groups(rows, names, rank_by=rank_by)
        return TrackerComparison(count=total, groups=[TrackerGroup(**g) for g in groups])
    count, by_channel, users = await store.preview(
        session, app_id=app_id, node=node, now=now, sample=sample
    )
    return PreviewRead(count=count, sample=[SampleUser(**u) for u in users], by_channel=by_channel)


@router.get(
    "/segments/{segment_id}/members.csv",
    operation_id="export_segment_members",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_members(
    segment_id: str, app_id: AdminAppDep, session: SessionDep, resources: ResourcesDep
) -> StreamingResponse:
    """The segment's current members as CSV (``EXPORT_COLUMNS``), in user key order,
    streamed page by page (``EXPORT_PAGE`` members per query, keyset on user key), so
    neither side holds the whole segment. Pages are read in their own short
    transactions: members who enter or leave during the export may or may not appear."""
    await _segment(session, app_id, segment_id)
    return StreamingResponse(
        _member_chunks(resources.sessions, app_id, segment_id),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{segment_id}-members.csv"'},
    )


async def _member_chunks(
    sessions: async_sessionmaker[AsyncSession], app_id: str, segment_id: str
) -> AsyncIterator[str]:
    after: str | None = None
    first = True
    while True:
        async with sessions() as session:
            page = await store.members_page(
                session, app_id=app_id, segment_id=segment_id, after=after, limit=EXPORT_PAGE
            )
        if first or page:
            rows = [segments.csv_values(row) for row in page]
            yield logic.to_csv(rows, EXPORT_COLUMNS, header=first)
        first = False
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1]["user_key"]


@router.get("/users/{user_key}/segments", operation_id="get_user_segments")
async def get_user_segments(
    user_key: str, app_id: AdminAppDep, session: SessionDep
) -> UserSegments:
    """The user's current memberships of active segments, in the order entered."""
    if await store.get_profile(session, app_id=app_id, user_key=user_key) is None:
        raise NotFound(f"no user {user_key}", field="user_key")
    rows = await store.user_segments(session, app_id=app_id, user_key=user_key)
    return UserSegments(
        user_key=user_key,
        items=[UserSegmentRead(segment_id=s, name=n, entered_at=e) for s, n, e in rows],
    )
