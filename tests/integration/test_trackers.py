"""Tracker CRUD: settings, PATCH, archive (the link stops), and the redirect allow-list."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import eventually

pytestmark = pytest.mark.integration

PHONE = {"User-Agent": "Mozilla/5.0 (Linux; Android 14)"}


async def test_tracker_lifecycle(http: httpx.AsyncClient, app_keys: dict[str, str]) -> None:
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    created = await http.post(
        "/admin/v1/trackers",
        headers=admin,
        json={
            "name": "Myket autumn",
            "channel": "myket",
            "network": "Yektanet",
            "campaign": "autumn",
            "store_url": "https://myket.ir/app/com.example",
            "counting": "on_verification",
            "click_window_hours": 72,
            "cost_model": "cpi",
            "cost_amount": "12000.5",
            "cost_currency": "IRR",
            "postback_urls": ["https://net.example/pb?click={click_id}"],
            "redirect_domains": ["Example.COM"],
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["token"]
    assert (body["counting"], body["click_window_hours"], body["cost_currency"]) == (
        "on_verification",
        72,
        "IRR",
    )
    assert body["redirect_domains"] == ["example.com"]

    patched = await http.patch(
        f"/admin/v1/trackers/{token}",
        headers=admin,
        json={"name": "Myket autumn v2", "click_window_hours": 24},
    )
    assert patched.status_code == 200
    assert (
        patched.json()["name"],
        patched.json()["click_window_hours"],
        patched.json()["campaign"],
    ) == ("Myket autumn v2", 24, "autumn")
    listed = await http.get("/admin/v1/trackers", headers=admin)
    assert [t["token"] for t in listed.json()["items"]] == [token]

    # Redirect override: allowed domains (and subdomains) only — never an open redirect.
    ok = await http.get(
        f"/c/{token}", headers=PHONE, params={"redirect": "https://shop.example.com/landing?x=1"}
    )
    assert urlsplit(ok.headers["location"]).netloc == "shop.example.com"
    evil = await http.get(
        f"/c/{token}", headers=PHONE, params={"redirect": "https://evil.example.net/phish"}
    )
    assert urlsplit(evil.headers["location"]).netloc == "myket.ir"
    sneaky = await http.get(
        f"/c/{token}", headers=PHONE, params={"redirect": "javascript://example.com/%0aalert(1)"}
    )
    assert urlsplit(sneaky.headers["location"]).netloc == "myket.ir"

    archived = await http.delete(f"/admin/v1/trackers/{token}", headers=admin)
    assert archived.status_code == 200 and archived.json()["status"] == "archived"

    async def link_dead() -> bool:  # within the tracker service's cache TTL
        return (await http.get(f"/c/{token}", headers=PHONE)).status_code == 404

    await eventually(link_dead, within=20)
    kept = await http.get(f"/admin/v1/trackers/{token}", headers=admin)
    assert kept.json()["status"] == "archived"  # history stays


async def test_tracker_validation(http: httpx.AsyncClient, app_keys: dict[str, str]) -> None:
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    base = {"name": "x", "channel": "web", "store_url": "https://example.com"}
    half_cost = await http.post(
        "/admin/v1/trackers", headers=admin, json={**base, "cost_model": "cpi"}
    )
    assert half_cost.status_code == 422
    assert half_cost.json()["error"]["field"] == "cost_model"
    too_long = await http.post(
        "/admin/v1/trackers", headers=admin, json={**base, "click_window_hours": 24 * 31}
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["field"] == "click_window_hours"
    created = await http.post("/admin/v1/trackers", headers=admin, json=base)
    token = created.json()["token"]
    nulled = await http.patch(f"/admin/v1/trackers/{token}", headers=admin, json={"name": None})
    assert nulled.status_code == 422 and nulled.json()["error"]["field"] == "name"
    missing = await http.patch("/admin/v1/trackers/nope", headers=admin, json={"name": "y"})
    assert missing.status_code == 404


async def test_tracker_event_postbacks(http: httpx.AsyncClient, app_keys: dict[str, str]) -> None:
    """A tracker chooses the in-app events posted back, optionally with their own URL
    templates; URLs for an event it did not choose, and ``$install``, are refused."""
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    base = {"name": "x", "channel": "web", "store_url": "https://example.com"}
    created = await http.post(
        "/admin/v1/trackers",
        headers=admin,
        json={
            **base,
            "postback_urls": ["https://net.example/pb?e={event}"],
            "postback_events": ["$purchase", "ثبت‌نام", "$purchase"],
            "event_postback_urls": {"ثبت‌نام": ["https://net.example/signup?r={revenue}"]},
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["token"]
    assert body["postback_events"] == ["$purchase", "ثبت‌نام"]  # each once
    assert body["event_postback_urls"] == {"ثبت‌نام": ["https://net.example/signup?r={revenue}"]}

    async def refused(method: str, url: str, json: dict) -> tuple[int, str]:
        r = await http.request(method, url, headers=admin, json=json)
        return r.status_code, r.json()["error"]["field"]

    unchosen = {"event_postback_urls": {"level_up": ["https://net.example/l"]}}
    assert await refused("POST", "/admin/v1/trackers", {**base, **unchosen}) == (
        422,
        "event_postback_urls.level_up",
    )
    assert await refused(
        "POST", "/admin/v1/trackers", {**base, "postback_events": ["a", "$install"]}
    ) == (422, "postback_events.1")
    tracker_url = f"/admin/v1/trackers/{token}"
    # PATCH is judged with what is stored: dropping an event that has its own URLs is
    # refused while the URLs stay.
    assert await refused("PATCH", tracker_url, {"postback_events": ["$purchase"]}) == (
        422,
        "event_postback_urls.ثبت‌نام",
    )
    assert await refused("PATCH", tracker_url, {"postback_events": None}) == (
        422,
        "postback_events",
    )
    patched = await http.patch(
        tracker_url,
        headers=admin,
        json={"postback_events": ["$purchase"], "event_postback_urls": {}},
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["postback_events"], patched.json()["event_postback_urls"]) == (
        ["$purchase"],
        {},
    )
