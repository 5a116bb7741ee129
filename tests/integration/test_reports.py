"""Analytics reports against an independent computation: a seeded synthetic history
goes through the production warehouse writer into chDB, every report is computed again
in plain Python from the same events, and the two must be equal exactly."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from libs.runtime.clickhouse import AsyncClickHouse, get_client
from libs.runtime.pipeline import Batch, Record
from libs.runtime.settings import PlatformSettings
from libs.schemas import Event, UserAttributed
from services.ingest.warehouse import WarehouseWriter

pytestmark = pytest.mark.integration

START = date(2026, 10, 1)
ZONES = ["Asia/Tehran", "Europe/Berlin", "America/New_York", None]
TRACKERS = [("infl1", "instagram_story"), ("infl2", "telegram"), ("landing", "landing_page")]


def synthetic(app_id: str, seed: int) -> tuple[list[Event], list[UserAttributed]]:
    rnd = random.Random(seed)
    events: list[Event] = []
    attributions: list[UserAttributed] = []

    def add(name: str, device: str, ts: datetime, **kw: Any) -> None:
        events.append(
            Event(
                app_id=app_id,
                event_id=uuid.UUID(int=rnd.getrandbits(128)).hex,
                name=name,
                device_id=device,
                ts=ts,
                received_at=ts,
                **kw,
            )
        )

    for i in range(40):
        device, tz = f"dev{i}", rnd.choice(ZONES)
        platform = rnd.choice(["android", "ios"])
        installed = datetime.combine(
            START + timedelta(days=rnd.randrange(20)), datetime.min.time(), UTC
        ) + timedelta(minutes=rnd.randrange(1440))
        add("$install", device, installed, platform=platform, timezone=tz)
        tracker, channel = rnd.choice(TRACKERS)
        attributions.append(
            UserAttributed(
                app_id=app_id,
                attribution_id=f"a{i}",
                user_key=f"d:{device}",
                device_id=device,
                install_event_id=f"i{i}",
                install_ts=installed,
                attributed_at=installed,
                method="click_id",
                kind="new_user",
                status="attributed",
                tracker_token=tracker,
                channel=channel,
            )
        )
        user = f"user{i % 30}" if rnd.random() < 0.5 else None  # some share a user: 2 devices
        for day in sorted(rnd.sample(range(0, 45), rnd.randrange(0, 12))):
            ts = installed + timedelta(days=day, minutes=rnd.randrange(-600, 600))
            if ts < installed:
                continue
            identified = user if user and day > 2 else None
            if identified and day == min(d for d in range(3, 45)):
                pass
            add("$open", device, ts, platform=platform, timezone=tz, user_id=identified)
            if rnd.random() < 0.3:
                add(
                    "$purchase",
                    device,
                    ts + timedelta(minutes=5),
                    platform=platform,
                    timezone=tz,
                    user_id=identified,
                    revenue=float(rnd.randrange(1, 50)) * 1000,
                    currency="IRR",
                    props={"sku": rnd.choice(["A", "B"])},
                )
        if rnd.random() < 0.2:
            add("$uninstall", device, installed + timedelta(days=30), platform=platform)
    return events, attributions


class Reference:
    """The reports, computed in plain Python from the events."""

    def __init__(self, events: list[Event], attributions: list[UserAttributed]) -> None:
        self.events = events
        latest: dict[str, tuple[datetime, str]] = {}
        for e in events:
            if (
                e.user_id
                and e.device_id
                and (e.device_id not in latest or e.ts > latest[e.device_id][0])
            ):
                latest[e.device_id] = (e.ts, e.user_id)
        self.alias = {d: u for d, (_, u) in latest.items()}
        self.attr: dict[str, tuple[datetime, str | None, str | None]] = {}
        for a in attributions:
            uk = self.alias.get(a.device_id, a.user_key)
            if uk not in self.attr or a.attributed_at > self.attr[uk][0]:
                self.attr[uk] = (a.attributed_at, a.tracker_token, a.channel)

    def uk(self, e: Event) -> str:
        return e.user_id or self.alias.get(e.device_id or "") or f"d:{e.device_id}"

    def activity(self) -> dict[str, set[date]]:
        out: dict[str, set[date]] = defaultdict(set)
        for e in self.events:
            if e.name not in ("$install", "$uninstall"):
                out[self.uk(e)].add(e.ts.date())
        return out

    def retention(
        self,
        start: date,
        end: date,
        days: list[int],
        *,
        weekly: bool,
        rolling: bool,
        tracker: str | None = None,
        platform: str | None = None,
    ) -> list[dict[str, Any]]:
        first: dict[str, Event] = {}
        for e in sorted(self.events, key=lambda e: e.ts):
            if e.name == "$install":
                first.setdefault(self.uk(e), e)
        active = self.activity()
        cohorts: dict[date, dict[str, Any]] = {}
        for uk, e in first.items():
            day0 = e.ts.date()
            if not start <= day0 <= end:
                continue
            if tracker and self.attr.get(uk, (None, None, None))[1] != tracker:
                continue
            if platform and e.platform != platform:
                continue
            key = day0 - timedelta(days=day0.weekday()) if weekly else day0
            c = cohorts.setdefault(key, {"size": 0, "retained": {str(n): 0 for n in days}})
            c["size"] += 1
            for n in days:
                diffs = [(d - day0).days for d in active.get(uk, ())]
                hit = any(x >= n for x in diffs) if rolling else n in diffs
                c["retained"][str(n)] += hit
        return [{"cohort": k.isoformat(), **v} for k, v in sorted(cohorts.items())]

    def heatmap(self, start: date, end: date) -> list[list[int]]:
        grid = [[0] * 24 for _ in range(7)]
        for e in self.events:
            if e.name == "$open" and start <= e.ts.date() <= end:
                local = e.ts.astimezone(ZoneInfo(e.timezone or "Asia/Tehran"))
                grid[local.weekday()][local.hour] += 1
        return grid

    def daily(self, start: date, end: date) -> list[dict[str, Any]]:
        active = self.activity()
        rows = []
        day = start
        while day <= end:

            def users(first: date, last: date) -> int:
                return sum(1 for ds in active.values() if any(first <= d <= last for d in ds))

            dau = users(day, day)
            mau = users(day - timedelta(days=29), day)
            rows.append(
                {
                    "period": day.isoformat(),
                    "dau": float(dau),
                    "wau": users(day - timedelta(days=6), day),
                    "mau": mau,
                    "stickiness": round(dau / mau, 4) if mau else 0.0,
                }
            )
            day += timedelta(days=1)
        return rows

    def churn(self, start: date, end: date, n: int) -> dict[str, Any]:
        active = self.activity()
        population = {
            uk: max(d for d in ds if d <= end)
            for uk, ds in active.items()
            if any(start <= d <= end for d in ds)
        }
        churned = {uk for uk, last in population.items() if (end - last).days >= n}
        installed: dict[str, date] = {}
        for e in self.events:
            if e.name == "$install":
                uk = self.uk(e)
                installed[uk] = min(installed.get(uk, e.ts.date()), e.ts.date())
        cohorts: dict[str, dict[str, int]] = {}
        for uk in population:
            if uk in installed:
                week = (installed[uk] - timedelta(days=installed[uk].weekday())).isoformat()
                c = cohorts.setdefault(week, {"size": 0, "churned": 0})
                c["size"] += 1
                c["churned"] += uk in churned
        removed = {
            self.uk(e)
            for e in self.events
            if e.name == "$uninstall" and start <= e.ts.date() <= end
        }
        size = len(population)
        return {
            "active": size,
            "churned": len(churned),
            "churn_rate": round(len(churned) / size, 4) if size else 0.0,
            "uninstalls": len(removed),
            "uninstall_rate": round(len(removed) / size, 4) if size else 0.0,
            "cohorts": [{"cohort": k, **v} for k, v in sorted(cohorts.items())],
        }

    def events_report(self, start: date, end: date, name: str, sku: str | None) -> list[dict]:
        per: dict[date, dict[str, Any]] = {}
        for e in self.events:
            if e.name != name or not start <= e.ts.date() <= end:
                continue
            if sku is not None and e.props.get("sku") != sku:
                continue
            row = per.setdefault(e.ts.date(), {"count": 0, "users": set(), "revenue": 0.0})
            row["count"] += 1
            row["users"].add(self.uk(e))
            row["revenue"] += e.revenue or 0.0
        return [
            {
                "period": d.isoformat(),
                "name": name,
                "count": r["count"],
                "users": len(r["users"]),
                "revenue": r["revenue"],
            }
            for d, r in sorted(per.items())
        ]


@pytest.mark.parametrize("seed", [7, 2026])
async def test_reports_equal_an_independent_computation(
    seed: int, app_keys: dict[str, str], http: httpx.AsyncClient, settings: PlatformSettings
) -> None:
    events, attributions = synthetic(app_keys["app_id"], seed)
    ch = AsyncClickHouse(get_client(settings.clickhouse_url), "hodhod")
    writer = WarehouseWriter(ch)
    records = [Record("events", 0, i, None, e, 0) for i, e in enumerate(events)]
    records += [Record("attributions", 0, i, None, a, 0) for i, a in enumerate(attributions)]
    await writer(Batch(records=records))
    await writer(Batch(records=records))  # a replay changes nothing
    ref = Reference(events, attributions)
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    start, end = START, START + timedelta(days=19)
    days = [0, 1, 3, 7, 14, 30]
    params = {"from": start.isoformat(), "to": end.isoformat(), "days": "0,1,3,7,14,30"}

    for mode in ("classic", "rolling"):
        for cohort in ("day", "week"):
            got = await http.get(
                "/admin/v1/reports/retention",
                headers=admin,
                params={**params, "mode": mode, "cohort": cohort},
            )
            assert got.status_code == 200, got.text
            assert got.json()["cohorts"] == ref.retention(
                start, end, days, weekly=cohort == "week", rolling=mode == "rolling"
            ), (mode, cohort)
    filtered = await http.get(
        "/admin/v1/reports/retention",
        headers=admin,
        params={**params, "tracker": "infl1", "platform": "ios"},
    )
    assert filtered.json()["cohorts"] == ref.retention(
        start, end, days, weekly=False, rolling=False, tracker="infl1", platform="ios"
    )

    heat = await http.get(
        "/admin/v1/reports/heatmap",
        headers=admin,
        params={"from": start.isoformat(), "to": "2026-11-30"},
    )
    assert heat.json()["counts"] == ref.heatmap(start, date(2026, 11, 30))
    assert heat.json()["weekdays"][0] == "monday"

    active = await http.get(
        "/admin/v1/reports/active-users",
        headers=admin,
        params={"from": "2026-10-10", "to": "2026-10-25"},
    )
    assert active.json()["rows"] == ref.daily(date(2026, 10, 10), date(2026, 10, 25))

    report = await http.get(
        "/admin/v1/reports/events",
        headers=admin,
        params={
            "from": start.isoformat(),
            "to": "2026-11-30",
            "name": "$purchase",
            "where": "sku:A",
        },
    )
    assert report.json()["rows"] == ref.events_report(start, date(2026, 11, 30), "$purchase", "A")

    for n in (7, 30):
        churn = await http.get(
            "/admin/v1/reports/churn",
            headers=admin,
            params={"from": start.isoformat(), "to": "2026-11-20", "inactive_days": n},
        )
        assert churn.json() == ref.churn(start, date(2026, 11, 20), n), n

    identified = next(e.user_id for e in events if e.user_id)
    timeline = await http.get(f"/admin/v1/users/{identified}/timeline", headers=admin)
    assert timeline.status_code == 200, timeline.text
    mine = [e for e in events if ref.uk(e) == identified]
    assert len(timeline.json()["events"]) == min(len(mine), 200)
    assert {e["name"] for e in timeline.json()["events"]} == {e.name for e in mine}
    assert all(isinstance(e["props"], dict) for e in timeline.json()["events"])
    assert timeline.json()["attribution"]["tracker"] in {t for t, _ in TRACKERS}

    as_csv = await http.get(
        "/admin/v1/reports/retention", headers=admin, params={**params, "format": "csv"}
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text.splitlines()[0] == "cohort,size," + ",".join(f"retained.{n}" for n in days)


async def test_report_parameters_are_checked(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    backwards = await http.get(
        "/admin/v1/reports/retention",
        headers=admin,
        params={"from": "2026-10-10", "to": "2026-10-01"},
    )
    assert backwards.status_code == 422 and backwards.json()["error"]["field"] == "to"
    bad_days = await http.get(
        "/admin/v1/reports/retention",
        headers=admin,
        params={"from": "2026-10-01", "to": "2026-10-02", "days": "x"},
    )
    assert bad_days.status_code == 422 and bad_days.json()["error"]["field"] == "days"
    bad_date = await http.get(
        "/admin/v1/reports/heatmap", headers=admin, params={"from": "yesterday", "to": "2026-10-02"}
    )
    assert bad_date.status_code == 422 and bad_date.json()["error"]["field"] == "from"
