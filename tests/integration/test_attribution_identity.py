"""Installs whose user becomes known later: a login ($identify) or a verification naming
the device joins the device's installs to the user and re-classifies them — a second
device of an attributed user is a new device under the user's original tracker, never a
second new user; a login seen before its install still counts; a shared phone moves to
its newest user without merging anyone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration

PHONE = {"User-Agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36"}


class App:
    def __init__(self, http: httpx.AsyncClient, keys: dict[str, str], platform: Platform):
        self.http = http
        self.app_id = keys["app_id"]
        self.admin = {"Authorization": f"Bearer {keys['admin_token']}"}
        self.sdk = {"X-Hodhod-Key": keys["sdk_key"]}
        self.server = {"Authorization": f"Bearer {keys['server_key']}"}
        self.sessions = platform.app.state.resources.sessions

    async def tracker(self, name: str) -> str:
        created = await self.http.post(
            "/admin/v1/trackers",
            headers=self.admin,
            json={"name": name, "channel": "google_play", "store_url": "https://example.com/a"},
        )
        return str(created.json()["token"])

    async def click(self, token: str) -> str:
        answer = await self.http.get(f"/c/{token}", headers=PHONE)
        return parse_qs(urlsplit(answer.headers["location"]).query)["referrer"][0]

    async def send(self, *events: dict[str, Any]) -> None:
        # 30 s after "now": past the click-injection minimum for clicks made just before.
        ts = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
        body = {"events": [{"event_id": str(uuid.uuid4()), "ts": ts, **e} for e in events]}
        answer = await self.http.post("/v1/events", headers=self.sdk, json=body)
        assert answer.json()["accepted"] == len(events), answer.text

    async def install(self, device: str, *, referrer: str | None = None, adid: str) -> None:
        props = {"referrer": referrer} if referrer else {}
        await self.send(
            {
                "name": "$install",
                "device_id": device,
                "adid": adid,
                "platform": "android",
                "props": props,
            }
        )

    async def ledger(self) -> dict[str, tuple[str, str, str | None]]:
        """device → (user key, kind, tracker) of each install."""
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

    async def until(self, device: str, expected: tuple[str, str, str | None]) -> None:
        async def settled() -> bool:
            return (await self.ledger()).get(device) == expected

        try:
            await eventually(settled)
        except AssertionError:
            got = (await self.ledger()).get(device)
            raise AssertionError(f"{device}: {got} != {expected}") from None


async def test_second_device_of_a_user_becomes_a_new_device_under_the_original_tracker(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    app = App(http, app_keys, platform)
    influencer, landing = await app.tracker("influencer"), await app.tracker("landing")
    phone, tablet = "dev-phone", "dev-tablet"
    await app.install(phone, referrer=await app.click(influencer), adid=str(uuid.uuid4()))
    await app.until(phone, (f"d:{phone}", "new_user", influencer))
    await app.send({"name": "$identify", "device_id": phone, "user_id": "u-mina"})
    await app.until(phone, ("u-mina", "new_user", influencer))

    # The tablet comes through another tracker before its user logs in: a new user for
    # now, as nothing says otherwise …
    await app.install(tablet, referrer=await app.click(landing), adid=str(uuid.uuid4()))
    await app.until(tablet, (f"d:{tablet}", "new_user", landing))
    # … until the login: Mina's second device, reported under her original tracker.
    await app.send({"name": "$identify", "device_id": tablet, "user_id": "u-mina"})
    await app.until(tablet, ("u-mina", "new_device", influencer))

    async def report() -> dict[str, dict[str, Any]] | None:
        today = datetime.now(UTC).date().isoformat()
        answer = await http.get(
            "/admin/v1/reports/trackers", headers=app.admin, params={"from": today, "to": today}
        )
        rows = {r["tracker_token"]: r for r in answer.json()["rows"]}
        done = rows.get(influencer, {}).get("new_devices") == 1
        return rows if done and rows.get(landing, {}).get("new_users") == 0 else None

    rows = await eventually(report, within=60)
    assert (rows[influencer]["new_users"], rows[influencer]["new_devices"]) == (1, 1)

    # A replayed login changes nothing.
    await app.send({"name": "$identify", "device_id": tablet, "user_id": "u-mina"})
    await app.until(tablet, ("u-mina", "new_device", influencer))


async def test_login_before_the_install_arrives_and_a_verification_naming_the_device(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    app = App(http, app_keys, platform)
    paid = await app.tracker("paid")
    first, second, third = "dev-a", "dev-b", "dev-c"
    await app.install(first, referrer=await app.click(paid), adid=str(uuid.uuid4()))
    await app.send({"name": "$identify", "device_id": first, "user_id": "u-reza"})
    await app.until(first, ("u-reza", "new_user", paid))
    # The login of the second device is processed before its install: the install is
    # Reza's from the start.
    await app.send({"name": "$identify", "device_id": second, "user_id": "u-reza"})
    await app.install(second, adid=str(uuid.uuid4()))
    await app.until(second, ("u-reza", "new_device", paid))
    # The app's backend verifies Reza on a third device.
    await app.install(third, adid=str(uuid.uuid4()))
    await app.until(third, (f"d:{third}", "organic", None))
    verified = await http.post(
        "/v1/s2s/verify", headers=app.server, json={"user_id": "u-reza", "device_id": third}
    )
    assert verified.status_code == 202
    await app.until(third, ("u-reza", "new_device", paid))


async def test_a_shared_phone_moves_to_its_newest_user_without_merging(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    app = App(http, app_keys, platform)
    paid = await app.tracker("paid")
    shared = "dev-family"
    await app.install(shared, referrer=await app.click(paid), adid="a-" + uuid.uuid4().hex)
    await app.send({"name": "$identify", "device_id": shared, "user_id": "u-parent"})
    await app.until(shared, ("u-parent", "new_user", paid))
    await app.send({"name": "$identify", "device_id": shared, "user_id": "u-child"})
    # An older login replayed late does not move it back.
    stale = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    await app.send({"name": "$identify", "device_id": shared, "user_id": "u-parent", "ts": stale})

    async def owner() -> str | None:
        async with app.sessions() as session:
            return await session.scalar(
                text(
                    "SELECT user_id FROM attribution_device_links "
                    "WHERE app_id = :a AND device_id = :d"
                ),
                {"a": app.app_id, "d": shared},
            )

    async def moved() -> bool:
        return await owner() == "u-child"

    await eventually(moved)
    # The parent keeps the install: nobody was merged.
    assert (await app.ledger())[shared] == ("u-parent", "new_user", paid)
