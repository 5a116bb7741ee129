"""PRODUCT.md scenario 8 — birthday: a yearly date trigger at 10:00 user-local time. Two
users born on the same day in different time zones each get the message at their 10:00,
once. Over HTTP and topics, on the clocked platform."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import eventually
from tests.scenarios.conftest import Clocked, Jobs, Sdk, admin

pytestmark = pytest.mark.integration


async def test_birthday_at_ten_local_time(
    clocked: Clocked,
    clocked_http: httpx.AsyncClient,
    clocked_keys: dict[str, str],
    sdk: Sdk,
    jobs: Jobs,
) -> None:
    tehran, berlin = ZoneInfo("Asia/Tehran"), ZoneInfo("Europe/Berlin")
    # Tomorrow in Tehran is the birthday.
    day = (clocked.clock.now().astimezone(tehran) + timedelta(days=1)).date()
    born = (
        day.replace(year=1995).isoformat()
        if not (day.month == 2 and day.day == 29)
        else "1996-02-29"
    )
    mina, jonas = f"u-{uuid.uuid4().hex[:6]}", f"u-{uuid.uuid4().hex[:6]}"
    for user, zone in ((mina, "Asia/Tehran"), (jonas, "Europe/Berlin")):
        await sdk.send(
            "$attributes",
            device_id=f"dev-{user}",
            user_id=user,
            timezone=zone,
            props={"set": {"birthday": born, "first_name": user}},
        )

    async def profiles() -> bool:
        for user in (mina, jonas):
            r = await clocked_http.get(f"/admin/v1/users/{user}", headers=admin(clocked_keys))
            if r.status_code != 200 or r.json()["attributes"].get("birthday") != born:
                return False
        return True

    await eventually(profiles)
    created = await clocked_http.post(
        "/admin/v1/journeys",
        headers=admin(clocked_keys),
        json={
            "name": "Happy birthday",
            "trigger": {"type": "date", "attribute": "birthday", "at": "10:00"},
            "definition": {
                "start": "wish",
                "nodes": [
                    {
                        "id": "wish",
                        "type": "send",
                        "channel": "push",
                        "content": {"body": "تولدت مبارک 🎂"},
                    }
                ],
                "entry": {"reentry": "always"},
            },
        },
    )
    assert created.status_code == 201, created.text
    ten_tehran = datetime.combine(day, datetime.min.time().replace(hour=10), tehran).astimezone(UTC)
    ten_berlin = datetime.combine(day, datetime.min.time().replace(hour=10), berlin).astimezone(UTC)
    clocked.clock.set(ten_tehran - timedelta(minutes=1))
    await jobs.quiet(mina, expect=0)
    clocked.clock.set(ten_tehran)
    (wish,) = await jobs.of(mina, count=1)
    assert wish.step_id == "wish" and wish.created_at == ten_tehran
    await jobs.quiet(jonas, expect=0)
    clocked.clock.set(ten_berlin)
    await jobs.of(jonas, count=1)
    # The rest of the day and the next: nobody gets it twice.
    clocked.clock.advance(timedelta(hours=20))
    await jobs.quiet(mina, expect=1)
    await jobs.quiet(jonas, expect=1)
