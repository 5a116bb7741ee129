"""Erasing a user reaches attribution's Postgres: the user's installs on every device
(joined or still anonymous), the clicks they came through, device links, verification
and held events go; another user's stay. The erasure is carried out once: a redelivery
leaves what the user did since, and the forgotten device counts as new (not a reinstall)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.attribution.erasure import erase
from tests.conftest import Platform, eventually
from tests.integration.test_attribution_identity import App

pytestmark = pytest.mark.integration


async def _rows(app: App) -> dict[str, Any]:
    """What attribution holds of the app: installs (device → user key, kind), click ids,
    device links (device → user), verified users, erasures carried out. The erasures are
    read first: each statement sees what was committed when it started, so an erasure
    seen has its deletions seen by the reads after it."""
    async with app.sessions() as session:

        async def all_of(sql: str) -> list[Any]:
            return list((await session.execute(text(sql), {"a": app.app_id})).all())

        erasures = len(
            await all_of("SELECT erasure_id FROM attribution_erasures WHERE app_id = :a")
        )
        installs = await all_of(
            "SELECT device_id, user_key, kind FROM attribution_installs WHERE app_id = :a"
        )
        return {
            "installs": {r.device_id: (r.user_key, r.kind) for r in installs},
            "clicks": {
                r[0]
                for r in await all_of("SELECT click_id FROM attribution_clicks WHERE app_id = :a")
            },
            "links": {
                r.device_id: r.user_id
                for r in await all_of(
                    "SELECT device_id, user_id FROM attribution_device_links WHERE app_id = :a"
                )
            },
            "verified": {
                r[0]
                for r in await all_of(
                    "SELECT user_id FROM attribution_verifications WHERE app_id = :a"
                )
            },
            "erasures": erasures,
        }


async def test_erasure_takes_the_users_attribution_data_and_nobody_elses(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    app = App(http, app_keys, platform)
    tracker = await app.tracker("erasure")
    phone_ref, tablet_ref, other_ref = [await app.click(tracker) for _ in range(3)]
    # The user's phone: installed and logged in; the tablet: installed, never logged in
    # but linked by a verification; another user's phone.
    await app.install("e-phone", referrer=phone_ref, adid=str(uuid.uuid4()))
    await app.install("e-tablet", referrer=tablet_ref, adid=str(uuid.uuid4()))
    await app.install("o-phone", referrer=other_ref, adid=str(uuid.uuid4()))
    await app.send({"name": "$identify", "device_id": "e-phone", "user_id": "u-erased"})
    await app.send({"name": "$identify", "device_id": "o-phone", "user_id": "u-kept"})
    verified = await http.post(
        "/v1/s2s/verify", headers=app.server, json={"user_id": "u-erased", "device_id": "e-tablet"}
    )
    assert verified.status_code in (200, 202), verified.text

    async def joined() -> dict[str, Any] | None:
        rows = await _rows(app)
        users = {d: k for d, (k, _) in rows["installs"].items()}
        ready = users == {"e-phone": "u-erased", "e-tablet": "u-erased", "o-phone": "u-kept"}
        return rows if ready and "u-erased" in rows["verified"] else None

    before = await eventually(joined, within=60)
    assert len(before["clicks"]) >= 3
    assert before["links"] == {"e-phone": "u-erased", "e-tablet": "u-erased", "o-phone": "u-kept"}

    erased = await http.delete("/admin/v1/users/u-erased", headers=app.admin)
    assert erased.status_code == 202

    async def gone() -> dict[str, Any] | None:
        rows = await _rows(app)
        return rows if rows["erasures"] == 1 else None

    after = await eventually(gone, within=60)
    assert after["installs"] == {"o-phone": ("u-kept", "new_user")}
    assert after["links"] == {"o-phone": "u-kept"}
    assert "u-erased" not in after["verified"]
    # The erased installs' clicks are gone (IP, user agent, advertising id); the kept
    # user's click stays.
    assert len(after["clicks"]) == len(before["clicks"]) - 2

    # Forgotten: the phone installs again and is a new user; a redelivered erasure does
    # nothing to it.
    await app.install("e-phone", adid=str(uuid.uuid4()))

    async def back() -> dict[str, Any] | None:
        rows = await _rows(app)
        return rows if "e-phone" in rows["installs"] else None

    again = await eventually(back, within=60)
    assert again["installs"]["e-phone"] == ("d:e-phone", "organic")
    erasure_id = erased.json()["erasure_id"]
    async with app.sessions() as session, session.begin():
        redone = await erase(session, app_id=app.app_id, user_key="u-erased", erasure_id=erasure_id)
    assert redone == 0
    assert (await _rows(app))["installs"]["e-phone"] == ("d:e-phone", "organic")


async def test_erasing_an_anonymous_key_takes_that_device_only(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    app = App(http, app_keys, platform)
    tracker = await app.tracker("anonymous erasure")
    await app.install("a-gone", referrer=await app.click(tracker), adid=str(uuid.uuid4()))
    await app.install("a-kept", referrer=await app.click(tracker), adid=str(uuid.uuid4()))

    async def both() -> bool:
        return set((await _rows(app))["installs"]) == {"a-gone", "a-kept"}

    await eventually(both, within=60)
    assert (await http.delete("/admin/v1/users/d:a-gone", headers=app.admin)).status_code == 202

    async def gone() -> bool:
        rows = await _rows(app)
        return rows["erasures"] == 1

    await eventually(gone, within=60)
    rows = await _rows(app)
    assert set(rows["installs"]) == {"a-kept"}
    assert len(rows["clicks"]) == 1
