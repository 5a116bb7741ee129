"""Profiles across login, edit and erasure, through the real platform over HTTP: a
device's anonymous profile merges into its user's at ``$identify`` (once, however often
the login is replayed; later and older records of the device follow it), a shared phone
moves without a merge, admin edits reach the profile through the segmenter, and an
erasure removes the user from Postgres and ClickHouse."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from libs.runtime.clickhouse import AsyncClickHouse, get_client
from libs.runtime.settings import PlatformSettings
from libs.runtime.tenancy import provision_app
from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration


class App:
    """One test app and what its tests send and read."""

    def __init__(self, http: httpx.AsyncClient, keys: dict[str, str], platform: Platform):
        self.http = http
        self.app_id = keys["app_id"]
        self.admin = {"Authorization": f"Bearer {keys['admin_token']}"}
        self.sdk = {"X-Hodhod-Key": keys["sdk_key"]}
        self.server = {"Authorization": f"Bearer {keys['server_key']}"}
        self.sessions = platform.app.state.resources.sessions

    async def send(self, *events: dict[str, Any], server: bool = False) -> list[dict[str, Any]]:
        sent = [{"event_id": str(uuid.uuid4()), **e} for e in events]
        path, headers = ("/v1/s2s/events", self.server) if server else ("/v1/events", self.sdk)
        answer = await self.http.post(path, headers=headers, json={"events": sent})
        assert answer.status_code == 200 and answer.json()["accepted"] == len(sent), answer.text
        return sent

    async def replay(self, *events: dict[str, Any]) -> None:
        answer = await self.http.post("/v1/events", headers=self.sdk, json={"events": events})
        assert answer.json()["accepted"] == len(events), answer.text

    async def user(self, key: str, **params: str) -> httpx.Response:
        return await self.http.get(f"/admin/v1/users/{key}", headers=self.admin, params=params)

    async def profile_when(self, key: str, check: Any) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            answer = await self.user(key)
            body = answer.json() if answer.status_code == 200 else None
            return body if body is not None and check(body) else None

        result: dict[str, Any] = await eventually(probe)
        return result

    async def gone(self, key: str) -> None:
        async def probe() -> bool:
            return (await self.user(key)).status_code == 404

        await eventually(probe)

    async def segment(self, name: str, rule: dict[str, Any]) -> str:
        created = await self.http.post(
            "/admin/v1/segments", headers=self.admin, json={"name": name, "rule": rule}
        )
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.sessions() as session:
            result = await session.execute(text(sql), {"a": self.app_id, **params})
            return list(result.all())


def iso(ts: datetime) -> str:
    return ts.isoformat()


def ev(name: str, ts: datetime, **fields: Any) -> dict[str, Any]:
    return {"name": name, "ts": iso(ts), **fields}


@pytest.fixture
def ch(settings: PlatformSettings) -> AsyncClickHouse:
    return AsyncClickHouse(get_client(settings.clickhouse_url), "hodhod")


async def test_login_merges_the_anonymous_profile_once_and_the_device_follows(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform, ch: AsyncClickHouse
) -> None:
    app = App(http, app_keys, platform)
    gold = await app.segment("Gold", {"attribute": "tier", "op": "eq", "value": "gold"})
    buyers = await app.segment("Buyers", {"event": "$purchase", "count": {"op": "gte", "value": 2}})
    device, user = f"dev-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    anonymous = f"d:{device}"
    # The device, before login: a session, a purchase, attributes, a token, an opt-out.
    await app.send(
        ev(
            "$open",
            now - timedelta(minutes=30),
            device_id=device,
            platform="android",
            app_version="3.1",
        ),
        ev(
            "$purchase", now - timedelta(minutes=29), device_id=device, revenue=10.0, currency="USD"
        ),
        ev(
            "$attributes",
            now - timedelta(minutes=28),
            device_id=device,
            props={"set": {"tier": "gold", "lang": "fa"}},
        ),
        ev(
            "$push_token",
            now - timedelta(minutes=27),
            device_id=device,
            props={"token": "fcm-anon", "provider": "fcm"},
        ),
        ev("$opt_out", now - timedelta(minutes=26), device_id=device, props={"channel": "sms"}),
    )
    before = await app.profile_when(anonymous, lambda p: p["events"] == 5)
    assert before["segments"] == [gold] and before["devices"] == [device]
    # The user, known to the backend: an older purchase and older attributes.
    await app.send(
        ev("$purchase", now - timedelta(days=3), user_id=user, revenue=5.0, currency="USD"),
        ev(
            "$attributes",
            now - timedelta(days=3),
            user_id=user,
            props={"set": {"tier": "silver", "city": "Tehran"}},
        ),
        server=True,
    )
    await app.profile_when(user, lambda p: p["events"] == 2)

    [identify] = await app.send(
        ev("$identify", now - timedelta(minutes=20), device_id=device, user_id=user)
    )
    merged = await app.profile_when(user, lambda p: p["events"] == 8)
    await app.gone(anonymous)
    assert (merged["sessions"], merged["purchases"], merged["revenue"]) == (1, 2, 15.0)
    assert merged["attributes"] == {"tier": "gold", "lang": "fa", "city": "Tehran"}
    assert [t["token"] for t in merged["push_tokens"]] == ["fcm-anon"]
    assert merged["opt_outs"] == ["sms"]
    assert merged["devices"] == [device]
    assert datetime.fromisoformat(merged["first_seen"]) == now - timedelta(days=3)
    assert datetime.fromisoformat(merged["last_seen"]) == now - timedelta(minutes=20)
    assert merged["app_version"] == "3.1"
    assert sorted(merged["segments"]) == sorted([gold, buyers])
    by_device = await app.user(device, by="device")
    assert by_device.status_code == 200 and by_device.json()["user_key"] == user
    counters = await app.rows(
        "SELECT user_key, sum(count) AS n FROM segmenter_daily_counters WHERE app_id = :a "
        "AND name = '$purchase' GROUP BY user_key"
    )
    assert [tuple(r) for r in counters] == [(user, 2)]
    recent = await app.rows(
        "SELECT DISTINCT user_key FROM segmenter_recent_events WHERE app_id = :a"
    )
    assert [r.user_key for r in recent] == [user]

    async def announced() -> list[dict[str, Any]]:
        return await ch.query_rows(
            "SELECT user_key, segment_id, change FROM hodhod.segment_changes FINAL "
            "WHERE app_id = {a:String} ORDER BY user_key, segment_id, change",
            {"a": app.app_id},
        )

    expected = sorted(
        [
            {"user_key": anonymous, "segment_id": gold, "change": "entered"},
            {"user_key": anonymous, "segment_id": gold, "change": "exited"},
            {"user_key": user, "segment_id": gold, "change": "entered"},
            {"user_key": user, "segment_id": buyers, "change": "entered"},
        ],
        key=lambda r: (r["user_key"], r["segment_id"], r["change"]),
    )
    await eventually(lambda: _equal(announced(), expected))

    # The login again (a replayed record), then an anonymous event of the device older
    # than the login: the first changes nothing, the second folds into the user without
    # moving last_seen back. The device's own later marker tells both were handled.
    await app.replay(identify)
    await app.send(
        ev("$open", now - timedelta(hours=2), device_id=device),
        ev("marker", now - timedelta(hours=2), device_id=device),
    )
    after = await app.profile_when(user, lambda p: p["events"] == 10)
    assert (after["sessions"], after["purchases"], after["revenue"]) == (2, 2, 15.0)
    assert after["last_seen"] == merged["last_seen"]
    assert (await app.user(anonymous)).status_code == 404


async def _equal(rows: Any, expected: list[dict[str, Any]]) -> bool:
    return bool(await rows == expected)


async def test_a_shared_phone_moves_to_its_new_user_without_merging(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    app = App(http, app_keys, platform)
    phone, first, second = "dev-shared", "u-first", "u-second"
    now = datetime.now(UTC)
    await app.send(
        ev("$identify", now - timedelta(hours=1), device_id=phone, user_id=first),
        ev("$open", now - timedelta(minutes=59), device_id=phone),
    )
    await app.profile_when(first, lambda p: p["sessions"] == 1 and p["devices"] == [phone])
    await app.send(
        ev("$identify", now - timedelta(minutes=5), device_id=phone, user_id=second),
        ev("$open", now - timedelta(minutes=4), device_id=phone),
        # An older login of the first user, arriving late, does not take the phone back.
        ev("$identify", now - timedelta(minutes=50), device_id=phone, user_id=first),
        ev("$open", now - timedelta(minutes=3), device_id=phone),
    )
    newer = await app.profile_when(second, lambda p: p["sessions"] == 2)
    assert newer["devices"] == [phone] and newer["events"] == 3
    older = await app.profile_when(first, lambda p: p["events"] == 3)
    assert (older["sessions"], older["devices"]) == (1, [])
    assert (await app.user(phone, by="device")).json()["user_key"] == second


async def test_admin_edits_reach_the_profile_through_the_segmenter(
    http: httpx.AsyncClient,
    app_keys: dict[str, str],
    platform: Platform,
    settings: PlatformSettings,
) -> None:
    app = App(http, app_keys, platform)
    user = f"u-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    await app.send(
        ev(
            "$attributes",
            now - timedelta(hours=1),
            user_id=user,
            props={"set": {"city": "Shiraz", "phone": "+989120000000"}},
        ),
        server=True,
    )
    before = await app.profile_when(user, lambda p: p["events"] == 1)
    edit = await http.patch(
        f"/admin/v1/users/{user}",
        headers=app.admin,
        json={
            "set": {"vip": True, "نام": "سارا"},
            "unset": ["city"],
            "phone": None,
            "email": "sara@example.ir",
            "opt_out": ["push"],
        },
    )
    assert edit.status_code == 202, edit.text
    assert edit.json()["applies"] == {
        "attributes": {
            "set": {"vip": True, "نام": "سارا", "email": "sara@example.ir"},
            "unset": ["city", "phone"],
        },
        "opt_out": ["push"],
    }
    edited = await app.profile_when(
        user, lambda p: p["email"] == "sara@example.ir" and p["opt_outs"] == ["push"]
    )
    assert edited["attributes"] == {"vip": True, "نام": "سارا", "email": "sara@example.ir"}
    assert (edited["phone"], edited["opt_outs"]) == (None, ["push"])
    # Not activity: neither counted nor seen.
    assert (edited["events"], edited["last_seen"]) == (1, before["last_seen"])

    bad = await http.patch(f"/admin/v1/users/{user}", headers=app.admin, json={"email": "nope"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "email"
    empty = await http.patch(f"/admin/v1/users/{user}", headers=app.admin, json={})
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "set"
    missing = await http.patch("/admin/v1/users/nobody", headers=app.admin, json={"set": {"a": 1}})
    assert missing.status_code == 404
    other = await _another_app(http, settings, platform)
    foreign = await http.patch(
        f"/admin/v1/users/{user}", headers=other.admin, json={"set": {"a": 1}}
    )
    assert foreign.status_code == 404
    assert (await other.user(user)).status_code == 404


async def test_erasure_removes_the_user_everywhere_and_nobody_else(
    http: httpx.AsyncClient,
    app_keys: dict[str, str],
    platform: Platform,
    settings: PlatformSettings,
    ch: AsyncClickHouse,
) -> None:
    """Which warehouse rows an erasure takes (installs, attributions, clicks, a shared
    phone's later owner) is proven row by row in test_warehouse_erasure.py."""
    app = App(http, app_keys, platform)
    await app.segment("Seen this month", {"last_seen": {"op": "after", "ago": {"days": 30}}})
    device, user = f"dev-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    keeper, keeper_device = f"u-{uuid.uuid4().hex[:8]}", f"dev-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    await app.send(
        ev("$open", now - timedelta(hours=2), device_id=device),
        ev("$identify", now - timedelta(hours=1), device_id=device, user_id=user),
        ev(
            "$purchase",
            now - timedelta(minutes=50),
            device_id=device,
            user_id=user,
            revenue=3.0,
            currency="USD",
        ),
        ev("$identify", now - timedelta(hours=1), device_id=keeper_device, user_id=keeper),
    )
    await app.send(
        ev("order_paid", now - timedelta(minutes=40), user_id=user),
        server=True,
    )
    await app.profile_when(user, lambda p: p["events"] == 4 and p["segments"])
    await app.profile_when(keeper, lambda p: p["events"] == 1 and p["segments"])

    async def warehoused(who: str, devices: list[str]) -> int:
        rows = await ch.query_rows(
            "SELECT (SELECT count() FROM hodhod.events FINAL WHERE app_id = {a:String} "
            "        AND (user_id = {u:String} OR device_id IN {d:Array(String)})) "
            "     + (SELECT count() FROM hodhod.segment_changes FINAL "
            "        WHERE app_id = {a:String} AND user_key = {u:String}) AS n",
            {"a": app.app_id, "u": who, "d": devices},
        )
        return int(rows[0]["n"])

    # 4 events and an entry into the segment each (the keeper: 1 and 1)
    await eventually(lambda: _at_least(warehoused(user, [device]), 5))
    await eventually(lambda: _at_least(warehoused(keeper, [keeper_device]), 2))

    # Another app erasing the same user key erases nothing here.
    other = await _another_app(http, settings, platform)
    await other.send(ev("x", now, user_id="marker"), server=True)
    await other.profile_when("marker", lambda p: p["events"] == 1)
    assert (await http.delete(f"/admin/v1/users/{user}", headers=other.admin)).status_code == 202
    assert (await http.delete("/admin/v1/users/marker", headers=other.admin)).status_code == 202
    await other.gone("marker")  # one app's erasures are handled in order
    assert (await app.user(user)).status_code == 200

    erased = await http.delete(f"/admin/v1/users/{user}", headers=app.admin)
    assert erased.status_code == 202, erased.text
    assert erased.json()["user_key"] == user and erased.json()["erasure_id"]
    await app.gone(user)
    assert (await app.user(device, by="device")).status_code == 404
    for table in (
        "profiles",
        "device_aliases",
        "segmenter_daily_counters",
        "segmenter_recent_events",
        "segment_memberships",
    ):
        left = await app.rows(
            f"SELECT count(*) AS n FROM {table} WHERE app_id = :a AND user_key IN (:u, :d)",
            u=user,
            d=f"d:{device}",
        )
        assert left[0].n == 0, table

    async def none_left() -> bool:
        return await warehoused(user, [device]) == 0

    # The segment exit the erasure announces never lands in the warehouse either.
    await eventually(none_left)
    assert await warehoused(keeper, [keeper_device]) == 2
    timeline = await http.get(f"/admin/v1/users/{user}/timeline", headers=app.admin)
    assert timeline.status_code == 404
    # Idempotent: erasing again is accepted and changes nothing for anyone else.
    again = await http.delete(f"/admin/v1/users/{user}", headers=app.admin)
    assert again.status_code == 202
    await app.send(ev("x", now, user_id=keeper), server=True)
    await app.profile_when(keeper, lambda p: p["events"] == 2)
    assert (await app.user(user)).status_code == 404
    assert await none_left()
    assert (await app.user(keeper)).json()["devices"] == [keeper_device]


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count >= n)


async def _another_app(
    http: httpx.AsyncClient, settings: PlatformSettings, platform: Platform
) -> App:
    keys = asdict(await provision_app(settings.database_url, name="other"))
    return App(http, keys, platform)
