"""Attribution through the real broker and Postgres: advertising-id and fingerprint
matching, and a reinstall recognised by its advertising id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.attribution.store import Click
from tests.conftest import eventually

pytestmark = pytest.mark.integration

PHONE_UA = "Mozilla/5.0 (Linux; Android 13; SM-A536E) AppleWebKit/537.36 Mobile Safari/537.36"


async def tracker(http: httpx.AsyncClient, admin: dict[str, str], name: str) -> str:
    created = await http.post(
        "/admin/v1/trackers",
        headers=admin,
        json={
            "name": name,
            "channel": "google_play",
            "store_url": "https://play.google.com/store/apps/details?id=com.example",
        },
    )
    return str(created.json()["token"])


async def install(
    http: httpx.AsyncClient, sdk: dict[str, str], device: str, **fields: object
) -> None:
    ts = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    body = {
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "name": "$install",
                "device_id": device,
                "ts": ts,
                "platform": "android",
                **fields,
            }
        ]
    }
    response = await http.post("/v1/events", headers=sdk, json=body)
    assert response.json()["accepted"] == 1, response.text


async def indexed(
    sessions: async_sessionmaker[AsyncSession], app_id: str, token: str, count: int = 1
) -> None:
    """Wait until the matcher has indexed ``count`` clicks (or impressions) of ``token``.

    The tracker answers before its click is on the topic, so an install sent right after
    the redirect can reach the matcher first; a real install comes seconds after its
    click. Matching by advertising id or fingerprint has no late-click upgrade, so the
    tests send the install once the click is known, as it would be."""

    async def probe() -> bool:
        async with sessions() as session:
            n = await session.scalar(
                select(func.count())
                .select_from(Click)
                .where(Click.app_id == app_id, Click.tracker_token == token)
            )
        return (n or 0) >= count

    await eventually(probe)


async def attribution_of(http: httpx.AsyncClient, admin: dict[str, str], device: str) -> dict:
    async def found() -> dict | None:
        r = await http.get(f"/admin/v1/users/d:{device}", headers=admin)
        return (r.json().get("attribution") or None) if r.status_code == 200 else None

    return await eventually(found)


async def test_adid_match_then_reinstall(
    http: httpx.AsyncClient,
    app_keys: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    sdk = {"X-Hodhod-Key": app_keys["sdk_key"]}
    token = await tracker(http, admin, "adid campaign")
    adid = str(uuid.uuid4())
    click = await http.get(f"/c/{token}", params={"adid": adid}, headers={"User-Agent": PHONE_UA})
    assert click.status_code == 302
    await indexed(sessions, app_keys["app_id"], token)
    first = f"dev-{uuid.uuid4().hex[:6]}"
    await install(http, sdk, first, adid=adid)  # no referrer: the store lost it
    attribution = await attribution_of(http, admin, first)
    assert (attribution["method"], attribution["kind"], attribution["tracker_token"]) == (
        "adid",
        "new_user",
        token,
    )

    again = f"dev-{uuid.uuid4().hex[:6]}"  # reinstalled: a new device id, the same adid
    await install(http, sdk, again, adid=adid)
    second = await attribution_of(http, admin, again)
    assert second["kind"] == "reinstall"


async def test_fingerprint_match(
    http: httpx.AsyncClient,
    app_keys: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The click's IP and user agent (Android 13, SM-A536E) against the install's IP and
    SDK device fields; the test client's address is the same on both."""
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    sdk = {"X-Hodhod-Key": app_keys["sdk_key"]}
    token = await tracker(http, admin, "fingerprint campaign")
    click = await http.get(f"/c/{token}", headers={"User-Agent": PHONE_UA})
    assert click.status_code == 302
    await indexed(sessions, app_keys["app_id"], token)
    device = f"dev-{uuid.uuid4().hex[:6]}"
    await install(http, sdk, device, os_version="13", device_model="SM-A536E")
    attribution = await attribution_of(http, admin, device)
    assert (attribution["method"], attribution["tracker_token"]) == ("fingerprint", token)


async def test_view_through_impression(
    http: httpx.AsyncClient,
    app_keys: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An ad view (a pixel request) with the device's advertising id, and an install
    without any click: attributed view-through to the tracker that showed the ad."""
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    sdk = {"X-Hodhod-Key": app_keys["sdk_key"]}
    token = await tracker(http, admin, "banner views")
    adid = str(uuid.uuid4())
    pixel = await http.get(f"/i/{token}", params={"adid": adid}, headers={"User-Agent": PHONE_UA})
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert (await http.get("/i/unknown-token")).status_code == 404
    await indexed(sessions, app_keys["app_id"], token)
    device = f"dev-{uuid.uuid4().hex[:6]}"
    await install(http, sdk, device, adid=adid)
    attribution = await attribution_of(http, admin, device)
    assert (attribution["method"], attribution["tracker_token"]) == ("view_through", token)


async def test_adid_matches_whatever_its_case(
    http: httpx.AsyncClient,
    app_keys: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A network that passes the IDFA upper-case on the click and an SDK that reports it
    lower-case describe one device."""
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    sdk = {"X-Hodhod-Key": app_keys["sdk_key"]}
    token = await tracker(http, admin, "idfa campaign")
    adid = str(uuid.uuid4())
    click = await http.get(
        f"/c/{token}", params={"adid": adid.upper()}, headers={"User-Agent": PHONE_UA}
    )
    assert click.status_code == 302
    await indexed(sessions, app_keys["app_id"], token)
    device = f"dev-{uuid.uuid4().hex[:6]}"
    await install(http, sdk, device, adid=adid.lower())
    attribution = await attribution_of(http, admin, device)
    assert (attribution["method"], attribution["tracker_token"]) == ("adid", token)
