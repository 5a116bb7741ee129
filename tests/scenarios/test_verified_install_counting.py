"""PRODUCT.md scenario 10 — verified install counting: installs on a tracker configured
"count after verification" stay pending until the app's backend verifies the user;
unverified users are never counted as verified."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from libs.runtime.clock import ManualClock
from libs.runtime.timed import TimedRunner
from services.attribution.sweep import VerificationSweep
from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration

PHONE = {"User-Agent": "Mozilla/5.0 (Linux; Android 14)"}


async def click_and_install(http: httpx.AsyncClient, keys: dict[str, str], token: str) -> str:
    click = await http.get(f"/c/{token}", headers=PHONE)
    referrer = parse_qs(urlsplit(click.headers["location"]).query)["referrer"][0]
    device = f"dev-{uuid.uuid4().hex[:6]}"
    ts = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    posted = await http.post(
        "/v1/events",
        headers={"X-Hodhod-Key": keys["sdk_key"]},
        json={
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "name": "$install",
                    "device_id": device,
                    "ts": ts,
                    "platform": "android",
                    "props": {"referrer": referrer},
                }
            ]
        },
    )
    assert posted.json()["accepted"] == 1
    return device


async def status_becomes(
    http: httpx.AsyncClient, admin: dict[str, str], device: str, status: str, *, user: str = ""
) -> dict:
    """The attribution on the device's profile — or, once verified, on its user's (the
    verification named the device: the install is the user's now)."""

    async def probe() -> dict | None:
        r = await http.get(f"/admin/v1/users/{user or 'd:' + device}", headers=admin)
        attribution = r.json().get("attribution") if r.status_code == 200 else None
        return attribution if attribution and attribution["status"] == status else None

    return await eventually(probe)


async def test_installs_wait_for_verification(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    server = {"Authorization": f"Bearer {app_keys['server_key']}"}
    created = await http.post(
        "/admin/v1/trackers",
        headers=admin,
        json={
            "name": "Influencer (pay per verified user)",
            "channel": "instagram_story",
            "store_url": "https://cafebazaar.ir/app/com.example",
            "counting": "on_verification",
        },
    )
    token = created.json()["token"]

    verified_device = await click_and_install(http, app_keys, token)
    pending = await status_becomes(http, admin, verified_device, "pending")
    assert (pending["method"], pending["tracker_token"]) == ("click_id", token)

    # The app's backend confirms the user (OTP passed) — twice: a retry changes nothing.
    for _ in range(2):
        answer = await http.post(
            "/v1/s2s/verify",
            headers=server,
            json={
                "user_id": f"u-{verified_device}",
                "device_id": verified_device,
                "ts": datetime.now(UTC).isoformat(),
                "method": "otp",
            },
        )
        assert answer.status_code == 202, answer.text
    user = f"u-{verified_device}"
    verified = await status_becomes(http, admin, verified_device, "verified", user=user)
    assert verified["tracker_token"] == token

    # Another user never verifies: after the window the install is unverified, not billed.
    silent_device = await click_and_install(http, app_keys, token)
    await status_becomes(http, admin, silent_device, "pending")
    resources = platform.app.state.resources
    # The sweep as the platform runs it, on a clock 8 days ahead.
    clock = ManualClock(datetime.now(UTC) + timedelta(days=8))
    sweep = TimedRunner(
        VerificationSweep(resources.producer), sessions=resources.sessions, clock=clock
    )
    assert await sweep.run_once() >= 1
    await status_becomes(http, admin, silent_device, "unverified")
    # The verified install is final: a later sweep leaves it verified.
    clock.advance(timedelta(days=22))
    await sweep.run_once()
    await status_becomes(http, admin, verified_device, "verified", user=user)

    # The tracker report counts each install once, in its latest state, even though the
    # sweep restated one of them "8 days later" (another day, another partition).
    today = datetime.now(UTC).date()
    params = {
        "from": (today - timedelta(days=1)).isoformat(),
        "to": (today + timedelta(days=1)).isoformat(),
    }

    async def report() -> dict | None:
        r = await http.get("/admin/v1/reports/trackers", headers=admin, params=params)
        rows = {row["key"]: row for row in r.json()["rows"]}
        row = rows.get(token)
        return row if row and row["verified"] == 1 and row["unverified"] == 1 else None

    row = await eventually(report, within=30)
    assert (row["installs"], row["pending"], row["new_users"]) == (2, 0, 2)
