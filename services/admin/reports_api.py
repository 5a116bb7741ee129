"""Analytics reports (admin token): retention, active users, heatmap, events, churn and
trackers (figures, click-to-install times, user lists). Each is scoped by the token's app
and a UTC date range; ``format=csv`` gives tabular ones as CSV."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.background import BackgroundTask

from libs.runtime.deps import ClickHouseDep, SessionDep
from libs.runtime.errors import InvalidInput, NotFound
from libs.runtime.fraudrules import conversion_rule, tracker_flags
from libs.runtime.tenancy import AdminAppDep, App
from libs.schemas.attributions import AttributionStatus
from services.admin import logic, tracker_reports, warehouse
from services.admin.store import get_tracker, list_trackers

router = APIRouter(prefix="/admin/v1/reports", tags=["reports"])

From = Annotated[date, Query(alias="from")]
To = Annotated[date, Query(alias="to")]
Format = Annotated[Literal["json", "csv"], Query()]
Filter = Annotated[str | None, Query(max_length=256)]


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> Response:
    return PlainTextResponse(logic.to_csv(rows, columns), media_type="text/csv")


@router.get("/retention", operation_id="report_retention")
async def retention(
    app_id: AdminAppDep,
    ch: ClickHouseDep,
    start: From,
    end: To,
    cohort: Literal["day", "week"] = "day",
    days: str | None = None,
    mode: Literal["classic", "rolling"] = "classic",
    tracker: Filter = None,
    channel: Filter = None,
    platform: Filter = None,
    format: Format = "json",
) -> Any:
    start, end = logic.date_range(start, end)
    wanted = logic.retention_days(days)
    cohorts = await warehouse.retention(
        ch,
        app_id=app_id,
        start=start,
        end=end,
        weekly=cohort == "week",
        days=wanted,
        rolling=mode == "rolling",
        tracker=tracker,
        channel=channel,
        platform=platform,
    )
    if format == "csv":
        return _csv(cohorts, ["cohort", "size", "retained"])
    return {"cohorts": cohorts}


@router.get("/active-users", operation_id="report_active_users")
async def active_users(
    app_id: AdminAppDep,
    ch: ClickHouseDep,
    start: From,
    end: To,
    interval: Literal["day", "week", "month"] = "day",
    format: Format = "json",
) -> Any:
    start, end = logic.date_range(start, end)
    rows = await warehouse.active_users(
        ch, app_id=app_id, spans=logic.periods(start, end, interval)
    )
    if format == "csv":
        return _csv(rows, ["period", "dau", "wau", "mau", "stickiness"])
    return {"rows": rows}


@router.get("/heatmap", operation_id="report_heatmap")
async def heatmap(
    app_id: AdminAppDep,
    ch: ClickHouseDep,
    session: SessionDep,
    start: From,
    end: To,
    format: Format = "json",
) -> Any:
    start, end = logic.date_range(start, end)
    app = await session.get(App, app_id)
    default_tz = app.timezone if app is not None else logic.DEFAULT_TIMEZONE
    grid = logic.heatmap(
        await warehouse.session_hours(ch, app_id=app_id, start=start, end=end), default_tz
    )
    if format == "csv":
        rows = [
            {"weekday": day, **{str(h): grid[i][h] for h in range(24)}}
            for i, day in enumerate(logic.WEEKDAYS)
        ]
        return _csv(rows, ["weekday", *[str(h) for h in range(24)]])
    return {"weekdays": list(logic.WEEKDAYS), "counts": grid}


@router.get("/events", operation_id="report_events")
async def events(
    app_id: AdminAppDep,
    ch: ClickHouseDep,
    start: From,
    end: To,
    interval: Literal["day", "week", "month"] = "day",
    name: Annotated[str | None, Query(max_length=128)] = None,
    where: Annotated[str | None, Query(max_length=512, description="prop:value")] = None,
    format: Format = "json",
) -> Any:
    start, end = logic.date_range(start, end)
    prop = value = None
    if where:
        prop, sep, value = where.partition(":")
        if not sep or not prop:
            raise InvalidInput("expected prop:value", field="where")
    rows = await warehouse.event_report(
        ch,
        app_id=app_id,
        start=start,
        end=end,
        interval=interval,
        name=name,
        prop=prop,
        value=value,
    )
    if format == "csv":
        return _csv(rows, ["period", "name", "count", "users", "revenue"])
    return {"rows": rows}


@router.get("/churn", operation_id="report_churn")
async def churn(
    app_id: AdminAppDep,
    ch: ClickHouseDep,
    start: From,
    end: To,
    inactive_days: Annotated[int, Query(ge=1, le=365)] = 30,
    format: Format = "json",
) -> Any:
    start, end = logic.date_range(start, end)
    result = await warehouse.churn(
        ch, app_id=app_id, start=start, end=end, inactive_days=inactive_days
    )
    if format == "csv":
        return _csv(result["cohorts"], ["cohort", "size", "churned"])
    return result


REPORT_FIELDS = (
    "clicks",
    "impressions",
    "installs",
    "new_users",
    "reinstalls",
    "new_devices",
    "reattributions",
    "verified",
    "pending",
    "unverified",
    "rejected",
    "uninstalls",
)


@router.get("/trackers", operation_id="report_trackers")
async def trackers(
    app_id: AdminAppDep,
    ch: ClickHouseDep,
    session: SessionDep,
    start: From,
    end: To,
    group_by: Literal["tracker", "network", "campaign"] = "tracker",
    format: Format = "json",
) -> Any:
    """Per tracker (or rolled up by network or campaign): clicks, installs by kind and
    status, rejections by reason, uninstalls, revenue, and cost and ROI where the tracker
    has a cost (CPI: per counted new user — verified ones on verification trackers).
    ``flags`` names what a reviewer should look at, judged on the row's own totals with
    the app's fraud settings: ``low_conversion`` when installs (rejected ones included)
    per click are below ``min_conversion`` over at least ``min_clicks_for_conversion``
    clicks — the mark of click spamming."""
    start, end = logic.date_range(start, end)
    figures = await tracker_reports.tracker_report(ch, app_id=app_id, start=start, end=end)
    app = await session.get(App, app_id)
    conversion = conversion_rule(app.fraud if app is not None and app.fraud else {})
    known = {t.token: t for t in await list_trackers(session, app_id=app_id)}
    groups: dict[str, dict[str, Any]] = {}
    for token, values in figures.items():
        tracker = known.get(token)
        key = (
            token
            if group_by == "tracker"
            else ((getattr(tracker, group_by) if tracker else None) or "(none)")
        )
        row = groups.setdefault(
            key,
            {
                "key": key,
                **dict.fromkeys(REPORT_FIELDS, 0),
                "rejected_by_reason": {},
                "revenue": 0.0,
                "cost": None,
            },
        )
        for name in REPORT_FIELDS:
            row[name] += values.get(name, 0)
        row["revenue"] += values.get("revenue", 0.0)
        for reason, n in values.get("rejected_by_reason", {}).items():
            row["rejected_by_reason"][reason] = row["rejected_by_reason"].get(reason, 0) + n
        cost = logic.tracker_cost(tracker, values) if tracker else None
        if cost is not None:
            row["cost"] = (row["cost"] or 0.0) + cost
    rows = []
    for row in sorted(groups.values(), key=lambda r: r["key"]):
        row["roi"] = logic.roi(row["revenue"], row["cost"])
        row["flags"] = tracker_flags(
            clicks=row["clicks"], installs=row["installs"], conversion=conversion
        )
        if group_by == "tracker":
            row["tracker_token"] = row["key"]
        rows.append(row)
    if format == "csv":
        flat = [{**row, "flags": " ".join(row["flags"])} for row in rows]
        return _csv(flat, ["key", *REPORT_FIELDS, "revenue", "cost", "roi", "flags"])
    return {"rows": rows}


async def _known_tracker(session: AsyncSession, app_id: str, token: str) -> None:
    # Archived trackers still report: their installs happened.
    if await get_tracker(session, app_id=app_id, token=token) is None:
        raise NotFound(f"no tracker {token}", field="token")


@router.get("/trackers/{token}/ctit", operation_id="report_tracker_ctit")
async def tracker_ctit(
    app_id: AdminAppDep,
    ch: ClickHouseDep,
    session: SessionDep,
    token: str,
    start: From,
    end: To,
    status: AttributionStatus | None = None,
    format: Format = "json",
) -> Any:
    """The click-to-install time (install time − click time) distribution of the
    tracker's click-matched installs (methods click_id, adid, fingerprint; rejected ones
    included, or only ``status``) dated in [from, to], by each attribution's latest
    statement. Buckets are Prometheus-style: cumulative, ``le_seconds`` the upper bound
    (see ``logic.CTIT_BOUNDS``), the first (0) for clicks at or after the install, the
    last (null; ``+Inf`` in CSV) the total."""
    start, end = logic.date_range(start, end)
    await _known_tracker(session, app_id, token)
    counts = await tracker_reports.ctit_counts(
        ch,
        app_id=app_id,
        token=token,
        start=start,
        end=end,
        bounds=logic.CTIT_BOUNDS,
        status=status,
    )
    buckets = logic.ctit_buckets(counts)
    if format == "csv":
        return _csv(logic.ctit_csv_rows(buckets), ["le_seconds", "count"])
    return {"buckets": buckets}


@router.get(
    "/trackers/{token}/users.csv",
    operation_id="report_tracker_users",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def tracker_users(
    app_id: AdminAppDep,
    ch: ClickHouseDep,
    session: SessionDep,
    token: str,
    kind: Literal["installed", "reinstalled", "uninstalled"],
    start: From,
    end: To,
) -> StreamingResponse:
    """The tracker's users as CSV, streamed from ClickHouse block by block, one row per
    install (``installed``: kinds new_user, new_device, reattribution; ``reinstalled``:
    reinstall; never rejected ones) dated in [from, to], or per ``$uninstall`` in [from,
    to] that undid an install the tracker was credited with (``uninstalled``). Columns:
    user_key (by profile identity), user_id (empty for an anonymous ``d:`` key),
    device_id, adid, install_ts, kind, status, and uninstall_ts for ``uninstalled``."""
    start, end = logic.date_range(start, end)
    await _known_tracker(session, app_id, token)
    if kind == "uninstalled":
        blocks = tracker_reports.uninstalls_of(ch, app_id=app_id, token=token, start=start, end=end)
    else:
        blocks = tracker_reports.installs_of(
            ch,
            app_id=app_id,
            token=token,
            kinds=logic.USER_LIST_KINDS[kind],
            start=start,
            end=end,
        )
    columns = logic.user_list_columns(kind)
    # The query runs now, so that its failure is an error response, not a cut-off body.
    first = await anext(blocks, None)

    async def body() -> AsyncIterator[str]:
        try:
            yield logic.csv_lines([columns])
            block = first
            while block is not None:  # a block may be empty before the end
                yield logic.csv_lines(logic.user_list_row(row, columns) for row in block)
                block = await anext(blocks, None)
        finally:
            await blocks.aclose()

    return StreamingResponse(
        body(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{token}-{kind}.csv"'},
        # Closes the stream (its thread and client) also when the client went away
        # before the body started; closing twice is harmless.
        background=BackgroundTask(blocks.aclose),
    )
