"""Issue 15, over HTTP against the composed platform: a user's second device, installed
with no referrer and no advertising id, is a new device under the user's original
tracker — whether the login on it is processed before or after its install — and the
tracker report, the tracker's user list and the profile agree."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration

BROWSER = {"User-Agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36"}
# The first phone is the SDK fixture's (SM-A536E); the second is another model and OS.
SECOND_PHONE = "Dalvik/2.1.0 (Linux; U; Android 13; SM-A546E Build/TP1A.220624.014)"


class Scenario:
    def __init__(self, http: httpx.AsyncClient, keys: dict[str, str], platform: Platform):
        self.http = http
        self.app_id = keys["app_id"]
        self.admin = {"Authorization": f"Bearer {keys['admin_token']}"}
        self.sdk = {"X-Hodhod-Key": keys["sdk_key"]}
        self.sessions = platform.app.state.resources.sessions
        self.today = datetime.now(UTC).date().isoformat()

    async def tracker(self, name: str, channel: str, **extra: Any) -> str:
        created = await self.http.post(
            "/admin/v1/trackers",
            headers=self.admin,
            json={"name": name, "channel": channel, "store_url": "https://example.com/a", **extra},
        )
        assert created.status_code == 201, created.text
        return str(created.json()["token"])

    async def send(self, event: dict[str, Any], *, ts: datetime, agent: str | None = None) -> None:
        body = {"events": [{"event_id": str(uuid.uuid4()), "ts": ts.isoformat(), **event}]}
        headers = {**self.sdk, **({"User-Agent": agent} if agent else {})}
        answer = await self.http.post("/v1/events", headers=headers, json=body)
        assert answer.json()["accepted"] == 1, answer.text

    async def installs(self) -> dict[str, tuple[str, str, str | None]]:
        """device → (user key, kind, tracker) of its install in the ledger."""
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT device_id, user_key, kind, tracker_token "
                        "FROM attribution_installs WHERE app_id = :a"
                    ),
                    {"a": self.app_id},
                )
            ).all()
        return {r.device_id: (r.user_key, r.kind, r.tracker_token) for r in rows}

    async def linked(self, device: str) -> str | None:
        async with self.sessions() as session:
            user: str | None = await session.scalar(
                text(
                    "SELECT user_id FROM attribution_device_links "
                    "WHERE app_id = :a AND device_id = :d"
                ),
                {"a": self.app_id, "d": device},
            )
        return user

    async def report(self) -> dict[str, dict[str, Any]]:
        answer = await self.http.get(
            "/admin/v1/reports/trackers",
            headers=self.admin,
            params={"from": self.today, "to": self.today, "group_by": "tracker"},
        )
        assert answer.status_code == 200, answer.text
        return {r["tracker_token"]: r for r in answer.json()["rows"]}

    async def installed(self, token: str) -> list[dict[str, str]]:
        answer = await self.http.get(
            f"/admin/v1/reports/trackers/{token}/users.csv",
            headers=self.admin,
            params={"kind": "installed", "from": self.today, "to": self.today},
        )
        assert answer.status_code == 200, answer.text
        return list(csv.DictReader(io.StringIO(answer.text)))

    async def profile(self, user_key: str) -> dict[str, Any]:
        answer = await self.http.get(f"/admin/v1/users/{user_key}", headers=self.admin)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found


@pytest.mark.parametrize("login", ["after_install", "before_install"])
async def test_a_second_device_without_referrer_or_adid_is_a_new_device_of_the_tracker(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform, login: str
) -> None:
    s = Scenario(http, app_keys, platform)
    await s.tracker("T1", "google_play")
    await s.tracker("T2", "cafe_bazaar", counting="on_verification")
    t3 = await s.tracker("T3", "telegram")
    user = f"U1-{uuid.uuid4().hex[:6]}"

    # 1. A click on T3; the first phone installs with its referrer 11 s later (past the
    # click-injection minimum: the install's time is set, not waited for).
    clicked = await http.get(f"/c/{t3}", headers=BROWSER)
    referrer = parse_qs(urlsplit(clicked.headers["location"]).query)["referrer"][0]
    at = datetime.now(UTC) + timedelta(seconds=11)
    install = {"name": "$install", "device_id": "b1", "platform": "android"}
    await s.send({**install, "props": {"referrer": referrer}}, ts=at)
    # 2. It logs in as U1.
    await s.send(
        {"name": "$identify", "device_id": "b1", "user_id": user}, ts=at + timedelta(seconds=5)
    )

    async def first_joined() -> bool:
        return (await s.installs()).get("b1") == (user, "new_user", t3)

    await eventually(first_joined)

    # 3. The second phone: no referrer, no advertising id, another model and OS; a second
    # later it logs in as U1 — processed after its install, or before it.
    second = {
        "name": "$install",
        "device_id": "o2",
        "platform": "android",
        "device_model": "SM-A546E",
        "os_version": "13",
        "props": {},
    }
    identify = {"name": "$identify", "device_id": "o2", "user_id": user}
    later = at + timedelta(minutes=1)
    if login == "after_install":
        await s.send(second, ts=later, agent=SECOND_PHONE)

        async def recorded() -> bool:
            return "o2" in await s.installs()

        await eventually(recorded)
        await s.send(identify, ts=later + timedelta(seconds=1), agent=SECOND_PHONE)
    else:
        await s.send(identify, ts=later + timedelta(seconds=1), agent=SECOND_PHONE)

        async def link() -> bool:
            return await s.linked("o2") == user

        await eventually(link)
        await s.send(second, ts=later, agent=SECOND_PHONE)

    async def second_joined() -> bool:
        return (await s.installs()).get("o2") == (user, "new_device", t3)

    try:
        await eventually(second_joined)
    except AssertionError:
        raise AssertionError(f"o2: {(await s.installs()).get('o2')}") from None

    # 4. The report, the tracker's installed users and the profile agree.
    async def reported() -> dict[str, Any] | None:
        row = (await s.report()).get(t3)
        return row if row is not None and row["new_devices"] == 1 else None

    try:
        row = await eventually(reported, within=60)
    except AssertionError:
        raise AssertionError(f"report: {await s.report()}") from None
    assert (row["installs"], row["new_users"], row["new_devices"]) == (2, 1, 1), row
    listed = await s.installed(t3)
    assert sorted((r["user_key"], r["device_id"], r["kind"]) for r in listed) == [
        (user, "b1", "new_user"),
        (user, "o2", "new_device"),
    ]
    profile = await s.profile(user)
    assert profile["attribution"]["tracker_token"] == t3
    assert profile["attribution"]["kind"] == "new_user"
    assert sorted(profile["devices"]) == ["b1", "o2"]
