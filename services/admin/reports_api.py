"""Analytics reports (admin token): retention, active users, heatmap, events. Each is
scoped by the token's app and a UTC date range; ``format=csv`` gives tabular ones as CSV."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response

from libs.runtime.deps import ClickHouseDep, SessionDep
from libs.runtime.errors import InvalidInput
from libs.runtime.tenancy import AdminAppDep, App
from services.admin import logic, warehouse
from services.admin.store import list_trackers

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
    has a cost (CPI: per counted new user — verified ones on verification trackers)."""
    start, end = logic.date_range(start, end)
    figures = await warehouse.tracker_report(ch, app_id=app_id, start=start, end=end)
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
        if group_by == "tracker":
            row["tracker_token"] = row["key"]
        rows.append(row)
    if format == "csv":
        return _csv(rows, ["key", *REPORT_FIELDS, "revenue", "cost", "roi"])
    return {"rows": rows}
