"""The journeys admin API over HTTP: create, validate (422 naming the path), versions,
lifecycle, dry runs, stats and broadcasts (preview, cancel)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration


def admin(keys: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['admin_token']}"}


async def make_segment(http: httpx.AsyncClient, keys: dict[str, str], rule: Any = None) -> str:
    created = await http.post(
        "/admin/v1/segments",
        headers=admin(keys),
        json={
            "name": "Everyone recent",
            "rule": rule or {"last_seen": {"op": "after", "ago": {"days": 30}}},
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


CART = {
    "start": "wait",
    "nodes": [
        {"id": "wait", "type": "wait", "duration": {"hours": 2}, "next": "push"},
        {
            "id": "push",
            "type": "send",
            "channel": "best",
            "fallback": ["push", "sms"],
            "content": {"title": "سبد خرید", "body": "۱۰٪ تخفیف {{ sku }}"},
            "next": "bought",
        },
        {
            "id": "bought",
            "type": "wait_for_event",
            "event": "$purchase",
            "timeout": {"hours": 24},
            "on_event": "done",
            "on_timeout": "vip",
        },
        {
            "id": "vip",
            "type": "condition",
            "rule": {"attribute": "tier", "op": "eq", "value": "gold"},
            "yes": "gift",
            "no": "done",
        },
        {"id": "gift", "type": "send", "channel": "sms", "content": {"body": "gift"}},
        {"id": "done", "type": "exit"},
    ],
    "goal": {"event": "$purchase", "within": {"days": 3}},
}


async def test_validation_names_the_path(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    headers = admin(app_keys)
    segment = await make_segment(http, app_keys)
    cases = [
        (
            {"type": "segment_entered", "segment": segment},
            {**CART, "start": "nowhere"},
            "definition.start",
        ),
        (
            {"type": "segment_entered", "segment": segment},
            {**CART, "nodes": [*CART["nodes"][:-1], {"id": "done", "type": "exit", "x": 1}]},
            "definition.nodes.5.x",
        ),
        ({"type": "segment_entered", "segment": "seg_missing"}, CART, "trigger.segment"),
        (
            {"type": "event", "event": "add_to_cart"},
            {
                "start": "s",
                "nodes": [
                    {"id": "s", "type": "send", "channel": "push", "template_id": "tpl_nope"}
                ],
            },
            "definition.nodes.0.template_id",
        ),
        (
            {"type": "event", "event": "x"},
            {
                "start": "a",
                "nodes": [
                    {
                        "id": "a",
                        "type": "condition",
                        "rule": {"reachable": "push"},
                        "yes": "b",
                        "no": "b",
                    },
                    {
                        "id": "b",
                        "type": "condition",
                        "rule": {"reachable": "sms"},
                        "yes": "a",
                        "no": "a",
                    },
                ],
            },
            "definition.nodes.0",
        ),
    ]
    for trigger, definition, path in cases:
        for url in ("/admin/v1/journeys/validate", "/admin/v1/journeys"):
            body: dict[str, Any] = {"trigger": trigger, "definition": definition}
            if url.endswith("journeys"):
                body["name"] = "bad"
            answer = await http.post(url, headers=headers, json=body)
            assert answer.status_code == 422, (path, answer.text)
            assert answer.json()["error"]["field"] == path
    ok = await http.post(
        "/admin/v1/journeys/validate",
        headers=headers,
        json={
            "trigger": {"segment_entered": segment},
            "definition": {
                "steps": [{"id": "a", "send": {"channel": "push", "content": {"body": "hi"}}}]
            },
        },
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["trigger"] == {"type": "segment_entered", "segment": segment}
    assert ok.json()["segments"] == [segment]


async def test_lifecycle_versions_dry_run_and_stats(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    headers = admin(app_keys)
    created = await http.post(
        "/admin/v1/journeys",
        headers=headers,
        json={
            "name": "Cart",
            "trigger": {"type": "event", "event": "add_to_cart"},
            "definition": CART,
            "status": "draft",
        },
    )
    assert created.status_code == 201, created.text
    journey = created.json()
    assert (journey["status"], journey["version"]) == ("draft", 1)
    jid = journey["id"]
    assert (await http.post(f"/admin/v1/journeys/{jid}/resume", headers=headers)).status_code == 409
    for action, status in (("activate", "active"), ("pause", "paused"), ("resume", "active")):
        answer = await http.post(f"/admin/v1/journeys/{jid}/{action}", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == status
    renamed = await http.patch(
        f"/admin/v1/journeys/{jid}", headers=headers, json={"name": "Cart 2"}
    )
    assert renamed.json()["version"] == 1
    changed = await http.patch(
        f"/admin/v1/journeys/{jid}",
        headers=headers,
        json={"definition": {**CART, "goal": {"event": "$purchase", "within": {"days": 1}}}},
    )
    assert changed.json()["version"] == 2
    bad = await http.patch(
        f"/admin/v1/journeys/{jid}", headers=headers, json={"definition": {**CART, "start": "x"}}
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "definition.start"
    listed = await http.get("/admin/v1/journeys", headers=headers, params={"status": "active"})
    assert [j["id"] for j in listed.json()["items"]] == [jid]

    # Dry run of a user with a profile: reachable by SMS only, a gold member.
    device = f"dev-{uuid.uuid4().hex[:6]}"
    user = f"u-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC).isoformat()
    sent = await http.post(
        "/v1/events",
        headers={"X-Hodhod-Key": app_keys["sdk_key"]},
        json={
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "name": "$attributes",
                    "device_id": device,
                    "user_id": user,
                    "ts": now,
                    "props": {"set": {"tier": "gold", "phone": "+989121234567"}},
                },
            ]
        },
    )
    assert sent.json()["accepted"] == 1, sent.text

    async def profile() -> bool:
        r = await http.get(f"/admin/v1/users/{user}", headers=headers)
        return r.status_code == 200 and r.json()["phone"] is not None

    await eventually(profile)
    dry = await http.post(
        f"/admin/v1/journeys/{jid}/dry-run",
        headers=headers,
        json={"user_key": user, "event": {"name": "add_to_cart", "props": {"sku": "A1"}}},
    )
    assert dry.status_code == 200, dry.text
    body = dry.json()
    assert [s["node_id"] for s in body["steps"]] == ["wait", "push", "bought", "vip", "gift"]
    first, second = body["messages"]
    assert (first["channel"], first["fallback_channels"], first["context"]) == (
        "sms",
        [],
        {"sku": "A1"},
    )
    assert second["node_id"] == "gift"
    assert datetime.fromisoformat(first["at"]) - datetime.fromisoformat(
        body["steps"][0]["at"]
    ) == timedelta(hours=2)
    assert body["entry_refused"] is None and body["outcome"] == "completed"
    missing = await http.post(
        "/admin/v1/journeys/nope/dry-run", headers=headers, json={"user_key": user}
    )
    assert missing.status_code == 404

    # A real entry, then stats: one run waiting at the first node.
    await http.post(
        "/v1/events",
        headers={"X-Hodhod-Key": app_keys["sdk_key"]},
        json={
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "name": "add_to_cart",
                    "device_id": device,
                    "user_id": user,
                    "ts": datetime.now(UTC).isoformat(),
                    "props": {"sku": "A1"},
                }
            ]
        },
    )

    async def waiting() -> dict[str, Any] | None:
        r = await http.get(f"/admin/v1/journeys/{jid}/stats", headers=headers)
        stats = r.json()
        nodes = {n["node_id"]: n for n in stats["nodes"]}
        return stats if nodes["wait"]["waiting"] == 1 else None

    stats = await eventually(waiting)
    assert stats["runs"] == 1 and stats["variants"][0]["variant"] == "all"
    nodes = {n["node_id"]: n for n in stats["nodes"]}
    assert (nodes["wait"]["entered"], nodes["wait"]["type"]) == (1, "wait")
    archived = await http.post(f"/admin/v1/journeys/{jid}/archive", headers=headers)
    assert archived.json()["status"] == "archived"

    async def exited() -> bool:
        r = await http.get(f"/admin/v1/journeys/{jid}/stats", headers=headers)
        return {n["node_id"]: n for n in r.json()["nodes"]}["wait"]["exited"] == 1

    await eventually(exited)
    assert (
        await http.post(f"/admin/v1/journeys/{jid}/activate", headers=headers)
    ).status_code == 409


async def test_broadcasts_preview_and_cancel(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    headers = admin(app_keys)
    segment = await make_segment(http, app_keys, {"attribute": "vip", "op": "eq", "value": True})
    device = f"dev-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC).isoformat()
    await http.post(
        "/v1/events",
        headers={"X-Hodhod-Key": app_keys["sdk_key"]},
        json={
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "name": "$attributes",
                    "device_id": device,
                    "ts": now,
                    "props": {"set": {"vip": True, "email": "mina@example.com"}},
                }
            ]
        },
    )

    async def counted() -> dict[str, Any] | None:
        r = await http.post(
            "/admin/v1/broadcasts/preview", headers=headers, params={"segment": segment}
        )
        return r.json() if r.status_code == 200 and r.json()["count"] == 1 else None

    preview = await eventually(counted)
    assert preview["by_channel"]["email"] == 1 and preview["by_channel"]["push"] == 0
    unknown = await http.post(
        "/admin/v1/broadcasts/preview", headers=headers, params={"segment": "seg_x"}
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "segment"
    naive = await http.post(
        "/admin/v1/broadcasts",
        headers=headers,
        json={
            "name": "b",
            "segment": segment,
            "channel": "email",
            "content": {"body": "x"},
            "at": "2030-01-01T10:00:00",
        },
    )
    assert naive.status_code == 422 and naive.json()["error"]["field"] == "at"
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    created = await http.post(
        "/admin/v1/broadcasts",
        headers=headers,
        json={
            "name": "Yalda sale",
            "segment": segment,
            "channel": "email",
            "content": {"subject": "یلدا", "body": "۳۰٪"},
            "at": later,
            "local_time": "10:00",
            "per_second": 100,
        },
    )
    assert created.status_code == 201, created.text
    bid = created.json()["id"]
    assert created.json()["send"]["channel"] == "email"
    assert [
        b["id"] for b in (await http.get("/admin/v1/broadcasts", headers=headers)).json()["items"]
    ] == [bid]
    cancelled = await http.post(f"/admin/v1/broadcasts/{bid}/cancel", headers=headers)
    assert cancelled.json()["status"] == "cancelled"
    assert (await http.get(f"/admin/v1/broadcasts/{bid}", headers=headers)).json()[
        "status"
    ] == "cancelled"
    # A broadcast is not a journey: the journeys routes do not see it.
    assert (await http.get(f"/admin/v1/journeys/{bid}", headers=headers)).status_code == 404
