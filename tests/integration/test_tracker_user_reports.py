"""The per-tracker click-to-install time (CTIT) distribution and raw user lists.

Two ways in: through the running platform (clicks on the tracker link, installs over
``POST /v1/events`` at chosen CTITs, the attribution consumer deciding), and from a
written history (the production warehouse writer fed the records directly) for what
the live pipeline cannot produce today: rejections (fraud rules are not applied by the
consumer yet), clicks after installs, CTITs beyond the hour the ingest API accepts in
the future, restatements, reattributions."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from libs.runtime.clickhouse import AsyncClickHouse, get_client
from libs.runtime.pipeline import Batch, Record
from libs.runtime.settings import PlatformSettings
from libs.schemas import ClickRecorded, Event, InstallReported, UserAttributed
from services.ingest.warehouse import WarehouseWriter
from tests.conftest import eventually

pytestmark = pytest.mark.integration

PHONE = {"User-Agent": "Mozilla/5.0 (Linux; Android 14)"}
# The documented bounds, spelt out here rather than imported: the contract under test.
LE = [0, 10, 30, 60, 300, 900, 1800, 3600, 10800, 21600, 43200, 86400, 259200, 604800]
LE += [2592000, None]
HEADER = "user_key,user_id,device_id,adid,install_ts,kind,status"
S = timedelta(seconds=1)


def iso_ms(ts: datetime) -> str:
    """How the CSV writes a time: UTC, milliseconds (truncated, as ClickHouse stores)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def cumulative(counts: list[int]) -> list[dict[str, Any]]:
    assert len(counts) == len(LE)
    return [{"le_seconds": le, "count": n} for le, n in zip(LE, counts, strict=True)]


@pytest_asyncio.fixture(loop_scope="session")
async def ch(settings: PlatformSettings) -> AsyncIterator[AsyncClickHouse]:
    client = AsyncClickHouse(get_client(settings.clickhouse_url), "hodhod")
    yield client
    client.close()


async def new_tracker(http: httpx.AsyncClient, admin: dict[str, str], name: str) -> str:
    r = await http.post(
        "/admin/v1/trackers",
        headers=admin,
        json={"name": name, "channel": "telegram", "store_url": "https://example.com/app"},
    )
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


async def users_csv(
    http: httpx.AsyncClient, admin: dict[str, str], token: str, kind: str, span: dict[str, str]
) -> str:
    r = await http.get(
        f"/admin/v1/reports/trackers/{token}/users.csv",
        headers=admin,
        params={"kind": kind, **span},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    return r.text


async def ctit(
    http: httpx.AsyncClient, admin: dict[str, str], token: str, params: dict[str, str]
) -> list[dict[str, Any]]:
    r = await http.get(f"/admin/v1/reports/trackers/{token}/ctit", headers=admin, params=params)
    assert r.status_code == 200, r.text
    buckets: list[dict[str, Any]] = r.json()["buckets"]
    return buckets


# --- through the platform -------------------------------------------------------------


async def test_ctit_and_user_lists_through_the_platform(
    http: httpx.AsyncClient, app_keys: dict[str, str], ch: AsyncClickHouse
) -> None:
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    sdk = {"X-Hodhod-Key": app_keys["sdk_key"]}
    app_id = app_keys["app_id"]
    # Installs here come seconds after their clicks: lift the click-injection minimum so
    # the distribution spans 0 s to 50 min without rejections.
    lifted = await http.patch(
        "/admin/v1/app", headers=admin, json={"fraud": {"min_click_to_install_s": 0}}
    )
    assert lifted.status_code == 200, lifted.text
    tracker = await new_tracker(http, admin, "influencer")
    other = await new_tracker(http, admin, "landing")

    async def click(token: str) -> tuple[str, datetime]:
        """Click the link; the click's id and its recorded time (to the microsecond)."""
        r = await http.get(f"/c/{token}", headers=PHONE)
        referrer = parse_qs(urlsplit(r.headers["location"]).query)["referrer"][0]
        click_id = parse_qs(referrer)["click_id"][0]

        async def recorded() -> list[dict[str, Any]]:
            return await ch.query_rows(
                "SELECT JSONExtractString(payload, 'ts') AS ts FROM hodhod.clicks "
                "WHERE app_id = {a:String} AND click_id = {c:String}",
                {"a": app_id, "c": click_id},
            )

        rows = await eventually(recorded, within=30)
        return referrer, datetime.fromisoformat(rows[0]["ts"].replace("Z", "+00:00"))

    async def send(*events: dict[str, Any]) -> None:
        body = {"events": [{"event_id": str(uuid.uuid4()), **e} for e in events]}
        r = await http.post("/v1/events", headers=sdk, json=body)
        assert r.status_code in (200, 202) and r.json()["accepted"] == len(events), r.text

    installed: dict[str, datetime] = {}

    async def install(
        token: str, device: str, after: timedelta, **extra: Any
    ) -> tuple[str, datetime]:
        referrer, clicked = await click(token)
        at = clicked + after  # the install's CTIT is exactly `after`
        await send(
            {
                "name": "$install",
                "device_id": device,
                "ts": at.isoformat(),
                "props": {"referrer": referrer},
                **extra,
            }
        )
        installed[device] = at
        return device, at

    # New users at known CTITs (the first: the click at the install's very instant).
    await install(tracker, "dev-0", 0 * S)
    await install(tracker, "dev-r1", 5 * S, adid="ad-reinstalled")
    await install(tracker, "dev-n1", 20 * S, user_id="u-multi")
    await install(tracker, "dev-3", 45 * S)
    await install(tracker, "dev-4", 10 * 60 * S)
    await install(tracker, "dev-5", 20 * 60 * S)
    await install(tracker, "dev-6", 50 * 60 * S)
    await install(other, "dev-other", 5 * S)
    span = {
        "from": (datetime.now(UTC) - timedelta(days=1)).date().isoformat(),
        "to": (datetime.now(UTC) + timedelta(days=1)).date().isoformat(),
    }

    async def total(token: str, n: int) -> bool:
        return (await ctit(http, admin, token, span))[-1]["count"] == n

    # Later installs are judged against these, so they must be recorded first.
    await eventually(lambda: total(tracker, 7), within=40)
    # The same advertising id on a new device: a reinstall. The known user on a device
    # with an advertising id they never had: a new device, under the user's tracker.
    await install(tracker, "dev-r2", 2 * 60 * S, adid="ad-reinstalled")
    await install(tracker, "dev-n2", 4 * 60 * S, user_id="u-multi", adid="ad-second-phone")
    # dev-3 logs in later: its rows show the user. dev-4 uninstalls a minute after install.
    await send(
        {
            "name": "signed_up",
            "device_id": "dev-3",
            "user_id": "u-3",
            "ts": (installed["dev-3"] + S).isoformat(),
        },
        {
            "name": "$uninstall",
            "device_id": "dev-4",
            "ts": (installed["dev-4"] + 60 * S).isoformat(),
        },
    )
    await eventually(lambda: total(tracker, 9), within=40)

    assert await ctit(http, admin, tracker, span) == cumulative(
        [1, 2, 3, 4, 6, 7, 8, 9, 9, 9, 9, 9, 9, 9, 9, 9]
    )
    assert await ctit(http, admin, other, span) == cumulative([0] + [1] * 15)

    def row(device: str, user: str | None, adid: str, kind: str) -> str:
        key = user or f"d:{device}"
        return f"{key},{user or ''},{device},{adid},{iso_ms(installed[device])},{kind},attributed"

    expected_installed = [
        row("dev-0", None, "", "new_user"),
        row("dev-r1", None, "ad-reinstalled", "new_user"),
        row("dev-n1", "u-multi", "", "new_user"),
        row("dev-3", "u-3", "", "new_user"),
        row("dev-4", None, "", "new_user"),
        row("dev-5", None, "", "new_user"),
        row("dev-6", None, "", "new_user"),
        row("dev-n2", "u-multi", "ad-second-phone", "new_device"),
    ]
    expected_installed.sort(key=lambda line: line.split(",")[4])  # oldest install first

    async def listed() -> str | None:
        text = await users_csv(http, admin, tracker, "installed", span)
        # The login and the uninstall travel separately from the installs.
        return text if "u-3,u-3,dev-3" in text else None

    assert (await eventually(listed, within=40)).splitlines() == [HEADER, *expected_installed]
    assert (await users_csv(http, admin, tracker, "reinstalled", span)).splitlines() == [
        HEADER,
        row("dev-r2", None, "ad-reinstalled", "reinstall"),
    ]

    async def uninstalled() -> str | None:
        text = await users_csv(http, admin, tracker, "uninstalled", span)
        return text if len(text.splitlines()) > 1 else None

    assert (await eventually(uninstalled, within=40)).splitlines() == [
        f"{HEADER},uninstall_ts",
        f"{row('dev-4', None, '', 'new_user')},{iso_ms(installed['dev-4'] + 60 * S)}",
    ]
    assert (await users_csv(http, admin, other, "uninstalled", span)).splitlines() == [
        f"{HEADER},uninstall_ts"
    ]


# --- from a written history ---------------------------------------------------------

T0 = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)


async def test_ctit_and_user_lists_of_a_written_history(
    http: httpx.AsyncClient, app_keys: dict[str, str], ch: AsyncClickHouse
) -> None:
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    app_id = app_keys["app_id"]
    tracker = await new_tracker(http, admin, "yektanet")
    other = await new_tracker(http, admin, "bazaar")
    records: list[Any] = []
    at: dict[int, datetime] = {}  # install time per case

    def case(
        n: int,
        after: timedelta | None,
        *,
        token: str | None = tracker,
        method: str = "click_id",
        kind: str = "new_user",
        status: str = "attributed",
        clicked: datetime | None = None,
        user_id: str | None = None,
        adid: str | None = None,
        with_click_ts: bool = True,
        device: str | None = None,
        installed: datetime | None = None,
        **extra: Any,
    ) -> UserAttributed:
        """Case n: device d<n> (or ``device``); its click at T0 + n minutes (or
        ``clicked``), its install ``after`` it (or at T0 + n hours, or ``installed``,
        without a click)."""
        device = device or f"d{n}"
        click = clicked or T0 + timedelta(minutes=n)
        install_ts = click + after if after is not None else installed or T0 + timedelta(hours=n)
        at[n] = install_ts
        if after is not None:
            assert token is not None
            records.append(
                ClickRecorded(
                    app_id=app_id, click_id=f"c{n}", tracker_token=token, ts=click, is_bot=False
                )
            )
        records.append(
            InstallReported(
                app_id=app_id,
                event_id=f"i{n}",
                device_id=device,
                user_id=user_id,
                adid=adid,
                ts=install_ts,
                received_at=install_ts,
            )
        )
        attributed = UserAttributed(
            app_id=app_id,
            attribution_id=f"a{n}",
            user_key=user_id or f"d:{device}",
            device_id=device,
            user_id=user_id,
            install_event_id=f"i{n}",
            install_ts=install_ts,
            attributed_at=install_ts + 2 * S,
            method=method,
            kind=kind,
            status=status,
            tracker_token=token,
            click_id=f"c{n}" if after is not None else None,
            click_ts=click if after is not None and with_click_ts else None,
            **extra,
        )
        records.append(attributed)
        return attributed

    def event(name: str, device: str, ts: datetime, user_id: str | None = None) -> None:
        records.append(
            Event(
                app_id=app_id,
                event_id=str(uuid.uuid4()),
                name=name,
                device_id=device,
                user_id=user_id,
                ts=ts,
                received_at=ts,
            )
        )

    injection = ["click_injection"]
    case(1, -90 * S, status="rejected", fraud_reasons=injection)  # click after install
    case(3, 3 * S, method="fingerprint", status="rejected", fraud_reasons=injection)
    case(4, 25 * S, method="adid", adid="ad-4")
    case(5, 2 * 3600 * S, user_id="u-5")
    pending = case(6, 5 * 3600 * S, status="pending")
    # Verified the next day; the restatement carries no click time.
    records.append(
        pending.model_copy(
            update={"status": "verified", "attributed_at": T0 + timedelta(days=1), "click_ts": None}
        )
    )
    case(7, 2 * 86400 * S, kind="reattribution")
    case(8, 10 * 86400 * S)
    case(9, 45 * 86400 * S)
    case(10, 5 * S, method="view_through")  # credited, but an impression: no CTIT
    case(11, None, token=None, method="organic", kind="organic")
    case(12, 5 * S, clicked=T0 - timedelta(days=3))  # installed before `from`
    case(13, 5 * S, token=other)
    # Its only statement lacks the click time (the first merged away): from the click row.
    case(16, 40 * 60 * S, status="unverified", with_click_ts=False)
    # u-5's second phone, credited to u-5's tracker without a click of its own.
    case(17, None, method="organic", kind="new_device", user_id="u-5", adid="ad-17")
    case(18, 50 * S, kind="reinstall")
    case(19, 20 * 60 * S, kind="reinstall", status="rejected", fraud_reasons=["bot"])
    # d7 is reinstalled organically before it uninstalls: that uninstall is not the tracker's.
    case(
        20,
        None,
        token=None,
        method="organic",
        kind="reinstall",
        device="d7",
        installed=at[7] + 3600 * S,
    )

    event("signed_up", "d4", at[4] + 60 * S, user_id="u-4")  # d4 logs in later
    event("$uninstall", "d4", at[4] - 60 * S)  # before its install: undoes nothing here
    event("$uninstall", "d1", at[1] + 3600 * S)  # rejected: not the tracker's
    event("$uninstall", "d8", at[8] + 3600 * S)
    event("$open", "d17", at[17] + 60 * S, user_id="u-5")
    event("$uninstall", "d17", at[17] + 3600 * S)
    event("$uninstall", "d7", at[20] + 3600 * S)
    event("$uninstall", "d9", at[9] + 7 * 86400 * S)  # after `to`

    writer = WarehouseWriter(ch)
    topics = {
        ClickRecorded: "clicks",
        InstallReported: "installs",
        UserAttributed: "attributions",
        Event: "events",
    }
    batch = [Record(topics[type(r)], 0, i, None, r, 0) for i, r in enumerate(records)]
    await writer(Batch(records=batch))
    await writer(Batch(records=batch))  # a replay changes nothing
    span = {"from": T0.date().isoformat(), "to": (T0 + timedelta(days=50)).date().isoformat()}

    # CTITs of the tracker: -90 s, 3 s, 25 s, 50 s, 20 min, 40 min, 2 h, 5 h, 2 d, 10 d,
    # 45 d — rejected ones included; not the impression, the organic install, the install
    # before `from` or the other tracker's.
    everything = cumulative([1, 2, 3, 4, 4, 4, 5, 6, 7, 8, 8, 8, 9, 9, 10, 11])
    assert await ctit(http, admin, tracker, span) == everything
    assert await ctit(http, admin, tracker, {**span, "status": "rejected"}) == cumulative(
        [1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]
    )
    # The latest statement decides the status: the 5 h install is verified, not pending.
    assert await ctit(http, admin, tracker, {**span, "status": "verified"}) == cumulative(
        [0] * 9 + [1] * 7
    )
    assert await ctit(http, admin, tracker, {**span, "status": "pending"}) == cumulative([0] * 16)
    assert await ctit(http, admin, other, span) == cumulative([0] + [1] * 15)
    as_csv = await http.get(
        f"/admin/v1/reports/trackers/{tracker}/ctit",
        headers=admin,
        params={**span, "format": "csv"},
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(as_csv.text))) == [
        ["le_seconds", "count"],
        *([str(b["le_seconds"]), str(b["count"])] for b in everything[:-1]),
        ["+Inf", "11"],
    ]

    def row(n: int, user: str | None, adid: str, kind: str, status: str = "attributed") -> str:
        key = user or f"d:d{n}"
        return f"{key},{user or ''},d{n},{adid},{iso_ms(at[n])},{kind},{status}"

    installed = [
        row(4, "u-4", "ad-4", "new_user"),
        row(5, "u-5", "", "new_user"),
        row(6, None, "", "new_user", "verified"),
        row(7, None, "", "reattribution"),
        row(8, None, "", "new_user"),
        row(9, None, "", "new_user"),
        row(10, None, "", "new_user"),
        row(16, None, "", "new_user", "unverified"),
        row(17, "u-5", "ad-17", "new_device"),
    ]
    installed.sort(key=lambda line: line.split(",")[4])
    assert (await users_csv(http, admin, tracker, "installed", span)).splitlines() == [
        HEADER,
        *installed,
    ]
    assert (await users_csv(http, admin, tracker, "reinstalled", span)).splitlines() == [
        HEADER,
        row(18, None, "", "reinstall"),
    ]
    assert (await users_csv(http, admin, tracker, "uninstalled", span)).splitlines() == [
        f"{HEADER},uninstall_ts",
        # Oldest uninstall first.
        f"{row(17, 'u-5', 'ad-17', 'new_device')},{iso_ms(at[17] + 3600 * S)}",
        f"{row(8, None, '', 'new_user')},{iso_ms(at[8] + 3600 * S)}",
    ]
    assert (await users_csv(http, admin, other, "installed", span)).splitlines() == [
        HEADER,
        f"d:d13,,d13,,{iso_ms(at[13])},new_user,attributed",
    ]

    # An archived tracker still reports: its installs happened.
    assert (await http.delete(f"/admin/v1/trackers/{tracker}", headers=admin)).status_code == 200
    assert await ctit(http, admin, tracker, span) == everything
    assert len((await users_csv(http, admin, tracker, "installed", span)).splitlines()) == 10


async def test_tracker_report_parameters_are_checked(
    http: httpx.AsyncClient, app_keys: dict[str, str], settings: PlatformSettings
) -> None:
    from libs.runtime.tenancy import provision_app

    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    tracker = await new_tracker(http, admin, "checked")
    span = {"from": "2026-10-01", "to": "2026-10-31"}
    base = f"/admin/v1/reports/trackers/{tracker}"

    async def error(path: str, params: dict[str, str]) -> tuple[int, str | None]:
        r = await http.get(path, headers=admin, params=params)
        return r.status_code, r.json()["error"]["field"]

    users = f"{base}/users.csv"
    assert await error(users, {**span, "kind": "churned"}) == (422, "kind")
    assert await error(users, span) == (422, "kind")
    assert await error(users, {"from": "2026-10-31", "to": "2026-10-01", "kind": "installed"}) == (
        422,
        "to",
    )
    assert await error(f"{base}/ctit", {"from": "2026-10-31", "to": "2026-10-01"}) == (422, "to")
    assert await error(f"{base}/ctit", {**span, "status": "fraud"}) == (422, "status")
    assert await error(f"{base}/ctit", {**span, "format": "xml"}) == (422, "format")
    assert await error(f"{base}/ctit", {"from": "last week", "to": "2026-10-01"}) == (
        422,
        "from",
    )
    for path, params in (
        ("/admin/v1/reports/trackers/NoSuchTok/ctit", span),
        ("/admin/v1/reports/trackers/NoSuchTok/users.csv", {**span, "kind": "installed"}),
    ):
        assert await error(path, params) == (404, "token")
    # Another app's tracker is unknown here.
    stranger = await provision_app(settings.database_url, name=f"other-{uuid.uuid4().hex[:6]}")
    theirs = await new_tracker(http, {"Authorization": f"Bearer {stranger.admin_token}"}, "x")
    assert await error(f"/admin/v1/reports/trackers/{theirs}/ctit", span) == (404, "token")
    assert await error(
        f"/admin/v1/reports/trackers/{theirs}/users.csv", {**span, "kind": "uninstalled"}
    ) == (404, "token")
