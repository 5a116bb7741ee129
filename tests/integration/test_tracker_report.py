"""The per-tracker report from ClickHouse: clicks, installs by kind, revenue, cost, ROI,
and the review flags judged with the app's fraud settings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import eventually

pytestmark = pytest.mark.integration

PHONE = {"User-Agent": "Mozilla/5.0 (Linux; Android 14)"}


async def test_tracker_report(http: httpx.AsyncClient, app_keys: dict[str, str]) -> None:
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    sdk = {"X-Hodhod-Key": app_keys["sdk_key"]}
    paid = (
        await http.post(
            "/admin/v1/trackers",
            headers=admin,
            json={
                "name": "paid",
                "channel": "telegram",
                "network": "Adivery",
                "campaign": "winter",
                "store_url": "https://example.com/a",
                "cost_model": "cpi",
                "cost_amount": "1000",
                "cost_currency": "IRR",
            },
        )
    ).json()["token"]
    free = (
        await http.post(
            "/admin/v1/trackers",
            headers=admin,
            json={
                "name": "free",
                "channel": "web",
                "network": "Adivery",
                "campaign": "spring",
                "store_url": "https://example.com/b",
            },
        )
    ).json()["token"]
    later = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    devices = []
    for token, n in ((paid, 2), (free, 1)):
        for _ in range(n):
            click = await http.get(f"/c/{token}", headers=PHONE)
            referrer = parse_qs(urlsplit(click.headers["location"]).query)["referrer"][0]
            device = f"dev-{uuid.uuid4().hex[:6]}"
            devices.append(device)
            await http.post(
                "/v1/events",
                headers=sdk,
                json={
                    "events": [
                        {
                            "event_id": str(uuid.uuid4()),
                            "name": "$install",
                            "device_id": device,
                            "ts": later,
                            "props": {"referrer": referrer},
                        }
                    ]
                },
            )
    await http.get(f"/c/{paid}", headers=PHONE)  # a click that never installs
    await http.post(
        "/v1/events",
        headers=sdk,
        json={
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "name": "$purchase",
                    "device_id": devices[0],
                    "ts": later,
                    "revenue": 5000,
                    "currency": "IRR",
                }
            ]
        },
    )
    today = datetime.now(UTC).date()
    params = {
        "from": (today - timedelta(days=1)).isoformat(),
        "to": (today + timedelta(days=1)).isoformat(),
    }

    async def report() -> dict | None:
        r = await http.get("/admin/v1/reports/trackers", headers=admin, params=params)
        rows = {row["key"]: row for row in r.json()["rows"]}
        ready = (
            rows.get(paid, {}).get("installs") == 2
            and rows.get(free, {}).get("installs") == 1
            and rows.get(paid, {}).get("revenue") == 5000
        )
        return rows if ready else None

    rows = await eventually(report, within=40)
    assert (rows[paid]["clicks"], rows[paid]["new_users"], rows[paid]["cost"]) == (3, 2, 2000.0)
    assert rows[paid]["roi"] == 1.5  # (5000 − 2000) / 2000
    assert (rows[free]["clicks"], rows[free]["cost"], rows[free]["roi"]) == (1, None, None)
    # Under the default thresholds (1,000 clicks at least) nothing is judged.
    assert rows[paid]["flags"] == rows[free]["flags"] == []

    by_network = await http.get(
        "/admin/v1/reports/trackers", headers=admin, params={**params, "group_by": "network"}
    )
    (adivery,) = [r for r in by_network.json()["rows"] if r["key"] == "Adivery"]
    assert (adivery["installs"], adivery["clicks"]) == (3, 4)

    # Two clicks suffice now, and 70 % is the least conversion: paid (2 installs of 3
    # clicks) is flagged, free (one click) is too small to judge, and the network's
    # summed row (3 installs of 4 clicks) converts enough.
    patched = await http.patch(
        "/admin/v1/app",
        headers=admin,
        json={"fraud": {"min_conversion": 0.7, "min_clicks_for_conversion": 2}},
    )
    assert patched.status_code == 200
    r = await http.get("/admin/v1/reports/trackers", headers=admin, params=params)
    flags = {row["key"]: row["flags"] for row in r.json()["rows"]}
    assert (flags[paid], flags[free]) == (["low_conversion"], [])
    by_network = await http.get(
        "/admin/v1/reports/trackers", headers=admin, params={**params, "group_by": "network"}
    )
    assert [r["flags"] for r in by_network.json()["rows"] if r["key"] == "Adivery"] == [[]]
    csv = await http.get(
        "/admin/v1/reports/trackers", headers=admin, params={**params, "format": "csv"}
    )
    header, *lines = csv.text.splitlines()
    assert header.endswith(",roi,flags")
    assert {line.split(",")[0]: line.split(",")[-1] for line in lines} == {
        paid: "low_conversion",
        free: "",
    }
