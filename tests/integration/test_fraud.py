"""Fraud rules applied by the attribution service with each app's own thresholds, and SDK
request signing at ingest: rejected installs are stored with their reasons and never
attributed; unsigned requests of a signing app are refused, their installs counted as
fraud; a signature is good once."""

from __future__ import annotations

import gzip
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from libs.runtime.signing import sign
from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration

PHONE_UA = "Mozilla/5.0 (Linux; Android 13; SM-A536E) AppleWebKit/537.36 Mobile Safari/537.36"


def headers(keys: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    return {"Authorization": f"Bearer {keys['admin_token']}"}, {"X-Hodhod-Key": keys["sdk_key"]}


async def new_tracker(http: httpx.AsyncClient, admin: dict[str, str]) -> str:
    created = await http.post(
        "/admin/v1/trackers",
        headers=admin,
        json={
            "name": "fraud",
            "network": "adnet",
            "channel": "google_play",
            "store_url": "https://example.com/app",
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


async def click(http: httpx.AsyncClient, token: str) -> str:
    answer = await http.get(f"/c/{token}", headers={"User-Agent": PHONE_UA})
    assert answer.status_code == 302, answer.text
    referrer = httpx.URL(answer.headers["location"]).params["referrer"]
    return str(httpx.QueryParams(referrer)["click_id"])


def install_body(
    device: str, *, after_click: timedelta, click_id: str | None = None, **props: Any
) -> dict[str, Any]:
    if click_id is not None:
        props["referrer"] = f"click_id={click_id}"
    return {
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "name": "$install",
                "device_id": device,
                "ts": (datetime.now(UTC) + after_click).isoformat(),
                "platform": "android",
                "props": props,
            }
        ]
    }


async def attribution_of(http: httpx.AsyncClient, admin: dict[str, str], device: str) -> dict:
    async def found() -> dict | None:
        r = await http.get(f"/admin/v1/users/d:{device}", headers=admin)
        return (r.json().get("attribution") or None) if r.status_code == 200 else None

    return dict(await eventually(found))


async def test_click_injection_is_rejected_and_counted_with_the_default_threshold(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    admin, sdk = headers(app_keys)
    token = await new_tracker(http, admin)
    click_id = await click(http, token)
    device = f"dev-{uuid.uuid4().hex[:8]}"
    # Installed a second after the click: under the 10 s minimum.
    body = install_body(device, after_click=timedelta(seconds=1), click_id=click_id)
    assert (await http.post("/v1/events", headers=sdk, json=body)).json()["accepted"] == 1
    attribution = await attribution_of(http, admin, device)
    assert attribution["status"] == "rejected"
    assert attribution["fraud_reasons"] == ["click_injection"]
    assert attribution["tracker_token"] == token  # counted against the tracker

    async def reported() -> dict | None:
        today = datetime.now(UTC).date().isoformat()
        r = await http.get(
            "/admin/v1/reports/trackers", headers=admin, params={"from": today, "to": today}
        )
        rows = [row for row in r.json()["rows"] if row["tracker_token"] == token]
        return rows[0] if rows and rows[0]["rejected"] else None

    row = await eventually(reported)
    assert (row["rejected"], row["new_users"]) == (1, 0)
    assert row["rejected_by_reason"] == {"click_injection": 1}


async def test_per_app_thresholds_and_block_list(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    admin, sdk = headers(app_keys)
    changed = await http.patch(
        "/admin/v1/app",
        headers=admin,
        json={"fraud": {"min_click_to_install_s": 0, "reject_emulators": False}},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["fraud"] == {"min_click_to_install_s": 0, "reject_emulators": False}
    token = await new_tracker(http, admin)
    fast = f"dev-{uuid.uuid4().hex[:8]}"
    body = install_body(
        fast, after_click=timedelta(seconds=1), click_id=await click(http, token), is_emulator=True
    )
    await http.post("/v1/events", headers=sdk, json=body)
    attribution = await attribution_of(http, admin, fast)
    assert (attribution["status"], attribution["kind"]) == ("attributed", "new_user")

    # The tests' SDK requests come from 127.0.0.1: block it, and rooted devices count.
    changed = await http.patch(
        "/admin/v1/app",
        headers=admin,
        json={"fraud": {"blocked_ips": ["127.0.0.1"], "reject_emulators": None}},
    )
    assert changed.json()["fraud"] == {"min_click_to_install_s": 0, "blocked_ips": ["127.0.0.1/32"]}
    blocked = f"dev-{uuid.uuid4().hex[:8]}"
    body = install_body(blocked, after_click=timedelta(minutes=1), is_emulator=True, is_rooted=True)
    await http.post("/v1/events", headers=sdk, json=body)
    attribution = await attribution_of(http, admin, blocked)
    assert attribution["status"] == "rejected"
    assert attribution["fraud_reasons"] == ["blocked_ip", "emulator", "rooted"]


async def test_fraud_settings_are_validated(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    admin, sdk = headers(app_keys)
    bad = await http.patch(
        "/admin/v1/app", headers=admin, json={"fraud": {"blocked_ips": ["10.0.0.0/8", "nope"]}}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "fraud.blocked_ips.1"
    bad = await http.patch(
        "/admin/v1/app", headers=admin, json={"fraud": {"max_clicks_per_hour": 0}}
    )
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "fraud.max_clicks_per_hour")
    bad = await http.patch("/admin/v1/app", headers=admin, json={"timezone": "Mars/Base"})
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "timezone")
    assert (await http.get("/admin/v1/app", headers=admin)).json()["fraud"] == {}
    # An SDK flag that is not a boolean is reported on the event; the batch goes on.
    body = install_body("dev-flag", after_click=timedelta(0), is_rooted="yes")
    answer = (await http.post("/v1/events", headers=sdk, json=body)).json()
    assert answer["accepted"] == 0
    assert answer["rejected"][0]["field"] == "props.is_rooted"


def signed(secret: str, body: bytes, *, ts: int | None = None) -> dict[str, str]:
    stamp = ts if ts is not None else int(time.time())
    return {"X-Hodhod-Timestamp": str(stamp), "X-Hodhod-Signature": sign(secret, body, stamp)}


async def test_signing_required(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    admin, sdk = headers(app_keys)
    refused = await http.patch("/admin/v1/app", headers=admin, json={"require_signature": True})
    assert (refused.status_code, refused.json()["error"]["field"]) == (409, "require_signature")
    created = await http.post("/admin/v1/app/sdk-secrets", headers=admin)
    assert created.status_code == 201
    secret, secret_id = created.json()["secret"], created.json()["id"]
    assert len(secret) >= 40
    turned_on = await http.patch("/admin/v1/app", headers=admin, json={"require_signature": True})
    assert turned_on.json()["require_signature"] is True
    listed = (await http.get("/admin/v1/app", headers=admin)).json()["sdk_secrets"]
    assert [s["id"] for s in listed] == [secret_id] and "secret" not in listed[0]
    last = await http.delete(f"/admin/v1/app/sdk-secrets/{secret_id}", headers=admin)
    assert last.status_code == 409

    device = f"dev-{uuid.uuid4().hex[:8]}"
    body = orjson.dumps(install_body(device, after_click=timedelta(minutes=1)))
    json_headers = {**sdk, "Content-Type": "application/json"}
    # Unsigned: refused, nothing accepted, the install recorded as fraud.
    unsigned = await http.post("/v1/events", headers=json_headers, content=body)
    assert unsigned.status_code == 401
    assert unsigned.json()["error"]["code"] == "bad_signature"
    assert unsigned.json()["error"]["field"] == "X-Hodhod-Signature"
    attribution = await attribution_of(http, admin, device)
    assert (attribution["status"], attribution["fraud_reasons"]) == ("rejected", ["bad_signature"])

    # Signed: accepted; the same install is now judged on the signed report.
    good = signed(secret, body)
    accepted = await http.post("/v1/events", headers={**json_headers, **good}, content=body)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted"] == 1

    async def attributed() -> dict | None:
        a = await attribution_of(http, admin, device)
        return a if a["status"] == "attributed" else None

    assert (await eventually(attributed))["fraud_reasons"] == []
    # The same signature again is a replay; a wrong secret and an old timestamp fail.
    replay = await http.post("/v1/events", headers={**json_headers, **good}, content=body)
    assert (replay.status_code, replay.json()["error"]["code"]) == (401, "bad_signature")
    assert "replay" in replay.json()["error"]["message"]
    forged = await http.post(
        "/v1/events", headers={**json_headers, **signed("not-the-secret", body)}, content=body
    )
    assert forged.status_code == 401
    stale = await http.post(
        "/v1/events",
        headers={**json_headers, **signed(secret, body, ts=int(time.time()) - 3600)},
        content=body,
    )
    assert (stale.status_code, stale.json()["error"]["field"]) == (401, "X-Hodhod-Timestamp")
    # A gzip body is signed as sent (compressed). It reports another install of the same
    # device: records of one device share a partition, so once it is attributed the
    # forged and stale copies before it have been processed too.
    second = install_body(device, after_click=timedelta(minutes=2))
    packed = gzip.compress(orjson.dumps(second))
    zipped = await http.post(
        "/v1/events",
        headers={**json_headers, "Content-Encoding": "gzip", **signed(secret, packed)},
        content=packed,
    )
    assert zipped.json()["accepted"] == 1
    first_id, second_id = (b["events"][0]["event_id"] for b in (orjson.loads(body), second))
    resources = platform.app.state.resources

    async def statuses() -> dict[str, str] | None:
        async with resources.sessions() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT install_event_id, status FROM attribution_installs "
                        "WHERE app_id = :a"
                    ),
                    {"a": app_keys["app_id"]},
                )
            ).all()
        found = {r.install_event_id: r.status for r in rows}
        return found if second_id in found else None

    # The forged and stale copies of the first install did not override the signed one.
    assert (await eventually(statuses))[first_id] == "attributed"
