"""The segments admin API through the real platform: profiles are built by posting events
(and installs through tracker links) over HTTP; segments are read, changed, archived,
validated, previewed and exported over HTTP."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from libs.runtime.settings import PlatformSettings
from libs.runtime.tenancy import provision_app
from services.admin import segments_api
from services.segmenter import store as segmenter_store
from services.segmenter.logic import rule_fingerprint
from services.segmenter.scheduler import RULE_SETTLE, SegmentScheduler
from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration

PHONE = {"User-Agent": "Mozilla/5.0 (Linux; Android 14)"}
CHANNELS = ("push", "sms", "email", "web_push", "in_app")
TEHRAN = {"attribute": "city", "op": "eq", "value": "Tehran"}
SHIRAZ = {"attribute": "city", "op": "eq", "value": "Shiraz"}


def admin(keys: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['admin_token']}"}


def event(name: str, user: str, ts: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "name": name,
        "user_id": user,
        "device_id": f"dev-{user}",
        "ts": ts.isoformat(),
        "platform": "android",
        **fields,
    }


async def send(http: httpx.AsyncClient, keys: dict[str, str], events: list[dict]) -> None:
    r = await http.post(
        "/v1/events", headers={"X-Hodhod-Key": keys["sdk_key"]}, json={"events": events}
    )
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text


async def profile_with(
    http: httpx.AsyncClient, keys: dict[str, str], user: str, **expected: Any
) -> dict[str, Any]:
    """The user's profile once its fields have the ``expected`` values (events folded)."""

    async def probe() -> dict[str, Any] | None:
        r = await http.get(f"/admin/v1/users/{user}", headers=admin(keys))
        if r.status_code != 200:
            return None
        body = r.json()
        return body if all(body.get(k) == v for k, v in expected.items()) else None

    return await eventually(probe)


async def create_segment(
    http: httpx.AsyncClient, keys: dict[str, str], name: str, rule: dict[str, Any]
) -> str:
    r = await http.post(
        "/admin/v1/segments", headers=admin(keys), json={"name": name, "rule": rule}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def memberships(http: httpx.AsyncClient, keys: dict[str, str], user: str) -> list[str]:
    """The user's segments; none while the user has no profile yet."""
    r = await http.get(f"/admin/v1/users/{user}/segments", headers=admin(keys))
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    return [item["segment_id"] for item in r.json()["items"]]


async def members_csv(
    http: httpx.AsyncClient, keys: dict[str, str], segment_id: str
) -> list[dict[str, str]]:
    r = await http.get(f"/admin/v1/segments/{segment_id}/members.csv", headers=admin(keys))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0] == ",".join(segments_api.EXPORT_COLUMNS)
    return list(csv.DictReader(io.StringIO(r.text)))


# --- preview --------------------------------------------------------------------------------

# Who is who: city, contacts, push, opt-outs, purchases, and how long ago they were seen.
PEOPLE: dict[str, dict[str, Any]] = {
    "ava": {"city": "Tehran", "phone": "+989120000001", "push": True, "ago": 1, "buys": 0},
    "bahar": {"city": "Tehran", "email": "b@example.com", "out": ["in_app"], "ago": 2, "buys": 1},
    "cyrus": {"city": "Shiraz", "phone": "+989120000003", "push": True, "ago": 3, "buys": 0},
    "dara": {
        "city": "Tehran",
        "phone": "+989120000004",
        "web_push": True,
        "out": ["sms"],
        "ago": 4,
        "buys": 2,
    },
    "elham": {"city": "Tehran", "push": True, "out": ["push"], "ago": 5, "buys": 0},
}


def person_events(user: str, spec: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    ts = now - timedelta(minutes=spec["ago"])
    attrs = {"city": spec["city"], **{k: spec[k] for k in ("phone", "email") if k in spec}}
    events = [event("$open", user, ts), event("$attributes", user, ts, props={"set": attrs})]
    if spec.get("push"):
        events.append(
            event("$push_token", user, ts, props={"token": f"fcm-{user}", "provider": "fcm"})
        )
        events.append(event("$push_permission", user, ts, props={"granted": True}))
    if spec.get("web_push"):
        events.append(
            event("$push_token", user, ts, props={"token": f"wp-{user}", "provider": "webpush"})
        )
    for channel in spec.get("out", []):
        events.append(event("$opt_out", user, ts, props={"channel": channel}))
    for _ in range(spec["buys"]):
        events.append(event("$purchase", user, ts, revenue=1000, currency="IRR"))
    return events


def reachable(spec: dict[str, Any], channel: str) -> bool:
    """The rule language's ``reachable`` for these people (all seen minutes ago)."""
    if channel in spec.get("out", []):
        return False
    has = {"push": spec.get("push"), "sms": "phone" in spec, "email": "email" in spec}
    has |= {"web_push": spec.get("web_push"), "in_app": True}
    return bool(has[channel])


async def test_preview_counts_samples_and_reach_per_channel(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    for user, spec in PEOPLE.items():
        await send(http, app_keys, person_events(user, spec, now))
    for user, spec in PEOPLE.items():
        await profile_with(http, app_keys, user, events=len(person_events(user, spec, now)))

    tehran = {u: s for u, s in PEOPLE.items() if s["city"] == "Tehran"}
    newest_first = sorted(tehran, key=lambda u: (tehran[u]["ago"], u))
    r = await http.post(
        "/admin/v1/segments/preview", headers=admin(app_keys), json={"rule": TEHRAN, "sample": 3}
    )
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["count"] == len(tehran)
    assert preview["by_channel"] == {
        ch: sum(reachable(s, ch) for s in tehran.values()) for ch in CHANNELS
    }
    assert [u["user_key"] for u in preview["sample"]] == newest_first[:3]
    first = preview["sample"][0]
    spec = tehran[first["user_key"]]
    assert first["user_id"] == first["user_key"]
    assert (first["platform"], first["sessions"], first["tracker_token"]) == ("android", 1, None)
    assert (first["purchases"], first["revenue"]) == (spec["buys"], 1000.0 * spec["buys"])
    assert datetime.fromisoformat(first["last_seen"]) == now - timedelta(minutes=spec["ago"])

    # The saved segment previews the same; the sample size is the caller's.
    segment_id = await create_segment(http, app_keys, "Tehran", TEHRAN)
    saved = await http.get(
        f"/admin/v1/segments/{segment_id}/preview", headers=admin(app_keys), params={"sample": 3}
    )
    assert saved.json() == preview
    none = await http.get(
        f"/admin/v1/segments/{segment_id}/preview", headers=admin(app_keys), params={"sample": 0}
    )
    assert (none.json()["count"], none.json()["sample"]) == (len(tehran), [])
    assert none.json()["by_channel"] == preview["by_channel"]
    nobody = await http.post(
        "/admin/v1/segments/preview",
        headers=admin(app_keys),
        json={"rule": {"attribute": "city", "op": "eq", "value": "Atlantis"}, "sample": 3},
    )
    assert nobody.json() == {"count": 0, "sample": [], "by_channel": dict.fromkeys(CHANNELS, 0)}

    # A rule over reachability itself: the same definition as by_channel.
    pushable = await http.post(
        "/admin/v1/segments/preview",
        headers=admin(app_keys),
        json={"rule": {"all": [TEHRAN, {"reachable": "push"}]}},
    )
    assert pushable.json()["count"] == preview["by_channel"]["push"]
    buyers = await http.post(
        "/admin/v1/segments/preview",
        headers=admin(app_keys),
        json={"rule": {"event": "$purchase", "count": {"op": "gte", "value": 1}}, "sample": 10},
    )
    assert sorted(u["user_key"] for u in buyers.json()["sample"]) == sorted(
        u for u, s in PEOPLE.items() if s["buys"] >= 1
    )


async def test_preview_refuses_bad_input(http: httpx.AsyncClient, app_keys: dict[str, str]) -> None:
    url = "/admin/v1/segments/preview"
    bad = await http.post(
        url,
        headers=admin(app_keys),
        json={"rule": {"all": [TEHRAN, {"last_seen": {"op": "near"}}]}},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "rule.all.1.last_seen.op"
    assert "must be before or after" in bad.json()["error"]["message"]
    for body, field in (
        ({"rule": TEHRAN, "sample": 101}, "sample"),
        ({"rule": TEHRAN, "group_by": "campaign"}, "group_by"),
        ({"rule": TEHRAN, "rank_by": "revenue"}, "rank_by"),
        ({"rule": [TEHRAN]}, "rule"),
        ({"rule": {"segment": "seg_nope"}}, "rule.segment"),
    ):
        r = await http.post(url, headers=admin(app_keys), json=body)
        assert (r.status_code, r.json()["error"]["field"]) == (422, field), r.text


# --- validate, read, change, archive -----------------------------------------------------------


async def test_validate_names_the_bad_node(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    base = await create_segment(http, app_keys, "Tehran", TEHRAN)
    rule = {"all": [{"segment": base}, {"last_seen": {"op": "after", "ago": {"days": 7}}}]}
    ok = await http.post(
        "/admin/v1/segments/validate", headers=admin(app_keys), json={"rule": rule}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"valid": True, "references": [base], "time_dependent": True}
    plain = await http.post(
        "/admin/v1/segments/validate", headers=admin(app_keys), json={"rule": TEHRAN}
    )
    assert plain.json() == {"valid": True, "references": [], "time_dependent": False}

    bad_rule = {"any": [TEHRAN, {"event": "$purchase", "count": {"op": "gte", "value": -5}}]}
    bad = await http.post(
        "/admin/v1/segments/validate", headers=admin(app_keys), json={"rule": bad_rule}
    )
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_rule", "rule.any.1.count.value")
    assert error["message"].startswith("any.1.count.value: must be an integer")
    unknown = await http.post(
        "/admin/v1/segments/validate",
        headers=admin(app_keys),
        json={"rule": {"not": {"segment": "seg_0000"}}},
    )
    assert unknown.json()["error"]["field"] == "rule.not.segment"
    assert "no segment 'seg_0000'" in unknown.json()["error"]["message"]


async def test_get_patch_and_archive(
    http: httpx.AsyncClient, app_keys: dict[str, str], settings: PlatformSettings
) -> None:
    keys = admin(app_keys)
    base = await create_segment(http, app_keys, "Tehran", TEHRAN)
    vip = await create_segment(http, app_keys, "Tehran buyers", {"all": [{"segment": base}]})
    created = (await http.get(f"/admin/v1/segments/{base}", headers=keys)).json()
    assert (created["name"], created["rule"], created["status"]) == ("Tehran", TEHRAN, "active")

    renamed = await http.patch(f"/admin/v1/segments/{base}", headers=keys, json={"name": "تهران"})
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["rule"]) == ("تهران", TEHRAN)
    updated_at = datetime.fromisoformat(renamed.json()["updated_at"])
    assert updated_at > datetime.fromisoformat(created["updated_at"])
    changed = await http.patch(f"/admin/v1/segments/{base}", headers=keys, json={"rule": SHIRAZ})
    assert (changed.json()["name"], changed.json()["rule"]) == ("تهران", SHIRAZ)
    assert (await http.get(f"/admin/v1/segments/{base}", headers=keys)).json()["rule"] == SHIRAZ

    for body, field in (
        ({"rule": {"segment": vip}}, "rule.segment"),  # base → vip → base
        ({"rule": {"all": [SHIRAZ, {"attribute": "city"}]}}, "rule.all.1.op"),
        ({"name": None}, "name"),
        ({"rule": None}, "rule"),
        ({"name": ""}, "name"),
        ({"status": "archived"}, "status"),
    ):
        r = await http.patch(f"/admin/v1/segments/{base}", headers=keys, json=body)
        assert (r.status_code, r.json()["error"]["field"]) == (422, field), r.text
    cycle = await http.patch(
        f"/admin/v1/segments/{base}", headers=keys, json={"rule": {"segment": vip}}
    )
    assert f"{base} -> {vip} -> {base}" in cycle.json()["error"]["message"]

    # A segment in use is not archived: 409 naming every referrer.
    journey = await http.post(
        "/admin/v1/journeys",
        headers=keys,
        json={
            "name": "VIP welcome",
            "trigger": {"segment_entered": vip},
            "definition": {
                "steps": [{"id": "hi", "send": {"channel": "log", "content": {"body": "hi"}}}]
            },
        },
    )
    assert journey.status_code == 201, journey.text
    refused = await http.delete(f"/admin/v1/segments/{base}", headers=keys)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "segment_in_use"
    assert f"segment {vip} (Tehran buyers)" in refused.json()["error"]["message"]
    refused = await http.delete(f"/admin/v1/segments/{vip}", headers=keys)
    assert refused.status_code == 409
    assert f"journey {journey.json()['id']} (VIP welcome)" in refused.json()["error"]["message"]
    assert (await http.get(f"/admin/v1/segments/{vip}", headers=keys)).json()["status"] == "active"

    free = await create_segment(http, app_keys, "Shiraz", SHIRAZ)
    archived = await http.delete(f"/admin/v1/segments/{free}", headers=keys)
    assert (archived.status_code, archived.json()["status"]) == (200, "archived")
    again = await http.delete(f"/admin/v1/segments/{free}", headers=keys)
    assert (again.status_code, again.json()["status"]) == (200, "archived")
    frozen = await http.patch(f"/admin/v1/segments/{free}", headers=keys, json={"name": "x"})
    assert (frozen.status_code, frozen.json()["error"]["code"]) == (409, "archived")
    # An archived segment can no longer be referenced.
    ref = await http.post(
        "/admin/v1/segments", headers=keys, json={"name": "r", "rule": {"segment": free}}
    )
    assert (ref.status_code, ref.json()["error"]["field"]) == (422, "rule.segment")
    listed = (await http.get("/admin/v1/segments", headers=keys)).json()["items"]
    assert {s["id"]: s["status"] for s in listed} == {
        base: "active",
        vip: "active",
        free: "archived",
    }

    # Unknown ids and other apps' segments answer 404 on every route.
    other = admin(asdict(await provision_app(settings.database_url, name="other")))
    for headers, segment_id in ((keys, "seg_0000000000000000"), (other, base)):
        for method, path, body in (
            ("GET", "", None),
            ("PATCH", "", {"name": "x"}),
            ("DELETE", "", None),
            ("GET", "/preview", None),
            ("GET", "/members.csv", None),
        ):
            r = await http.request(
                method, f"/admin/v1/segments/{segment_id}{path}", headers=headers, json=body
            )
            assert (r.status_code, r.json()["error"]["field"]) == (404, "segment_id"), (
                method,
                path,
            )
    assert (await http.get("/admin/v1/segments", headers=other)).json() == {"items": []}
    foreign = await http.post(
        "/admin/v1/segments/validate", headers=other, json={"rule": {"segment": base}}
    )
    assert (foreign.status_code, foreign.json()["error"]["field"]) == (422, "rule.segment")
    assert (await http.get(f"/admin/v1/segments/{base}", headers=keys)).json()["name"] == "تهران"


# --- members --------------------------------------------------------------------------------


async def test_members_csv_and_a_users_segments(
    http: httpx.AsyncClient, app_keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    segment_id = await create_segment(http, app_keys, "Tehran", TEHRAN)
    other_id = await create_segment(http, app_keys, "Everyone", {"event": "$open"})
    now = datetime.now(UTC)
    cities = {"u-3": "Tehran", "u-1": "Tehran", "u-5": "Shiraz", "u-2": "Tehran", "u-4": "Tehran"}
    for user, city in cities.items():
        await send(
            http,
            app_keys,
            [
                event("$open", user, now),
                event("$attributes", user, now, props={"set": {"city": city}}),
            ],
        )
    tehran = sorted(u for u, c in cities.items() if c == "Tehran")

    async def entered() -> bool:
        return all([segment_id in await memberships(http, app_keys, u) for u in tehran])

    await eventually(entered)
    items = (
        await http.get(f"/admin/v1/users/{tehran[0]}/segments", headers=admin(app_keys))
    ).json()
    assert items["user_key"] == tehran[0]
    assert {i["segment_id"]: i["name"] for i in items["items"]} == {
        segment_id: "Tehran",
        other_id: "Everyone",
    }
    entered_at = {i["segment_id"]: i["entered_at"] for i in items["items"]}

    # Pages smaller than the segment, and a last page that comes out empty.
    for page in (2, len(tehran), 1000):
        monkeypatch.setattr(segments_api, "EXPORT_PAGE", page)
        rows = await members_csv(http, app_keys, segment_id)
        assert [r["user_key"] for r in rows] == tehran
        assert {r["user_id"] for r in rows} == set(tehran)
        assert {(r["platform"], r["tracker_token"]) for r in rows} == {("android", "")}
        first = rows[0]
        assert datetime.fromisoformat(first["entered_at"]) == datetime.fromisoformat(
            entered_at[segment_id]
        )
        assert datetime.fromisoformat(first["last_seen"]) == now

    r = await http.get(f"/admin/v1/segments/{segment_id}/members.csv", headers=admin(app_keys))
    assert r.headers["content-disposition"] == f'attachment; filename="{segment_id}-members.csv"'
    assert await memberships(http, app_keys, "u-5") == [other_id]
    missing = await http.get("/admin/v1/users/u-nobody/segments", headers=admin(app_keys))
    assert (missing.status_code, missing.json()["error"]["field"]) == (404, "user_key")


# --- rule changes reach memberships ------------------------------------------------------------


async def test_rule_changes_and_archives_reach_memberships_by_the_scheduler(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    keys = admin(app_keys)
    segment_id = await create_segment(http, app_keys, "Tehran", TEHRAN)
    now = datetime.now(UTC)
    cities = {"t-1": "Tehran", "t-2": "Tehran", "s-1": "Shiraz"}
    for user, city in cities.items():
        await send(
            http,
            app_keys,
            [
                event("$open", user, now),
                event("$attributes", user, now, props={"set": {"city": city}}),
            ],
        )
    for user in cities:
        await profile_with(http, app_keys, user, events=2)

    async def in_segment(segment: str) -> set[str]:
        return {u for u in cities if segment in await memberships(http, app_keys, u)}

    async def settled(segment: str, users: set[str]) -> bool:
        return await in_segment(segment) == users

    assert await eventually(lambda: settled(segment_id, {"t-1", "t-2"}))

    # A rule change: the preview evaluates the new rule at once; the users, who send no
    # more events, move at the scheduler's next tick.
    r = await http.patch(f"/admin/v1/segments/{segment_id}", headers=keys, json={"rule": SHIRAZ})
    assert r.status_code == 200, r.text
    preview = await http.get(f"/admin/v1/segments/{segment_id}/preview", headers=keys)
    assert [u["user_key"] for u in preview.json()["sample"]] == ["s-1"]
    resources = platform.app.state.resources
    scheduler = SegmentScheduler(resources.sessions, resources.producer)

    async def after_tick(segment: str, users: set[str]) -> bool:
        # The platform's own scheduler may hold the app's lock: then it does the work.
        await scheduler.tick_app(app_keys["app_id"], datetime.now(UTC))
        return await settled(segment, users)

    await eventually(lambda: after_tick(segment_id, {"s-1"}))
    assert [r["user_key"] for r in await members_csv(http, app_keys, segment_id)] == ["s-1"]

    # A segment created after its users: they enter at the next tick, too.
    late = await create_segment(http, app_keys, "Tehran again", TEHRAN)
    await eventually(lambda: after_tick(late, {"t-1", "t-2"}))
    # Once reconciled and settled, a rule is not compared again until it changes.
    settled_at = datetime.now(UTC) + RULE_SETTLE

    async def recorded() -> bool:
        await scheduler.tick_app(app_keys["app_id"], settled_at)
        async with resources.sessions() as session:
            synced = await segmenter_store.synced_rules(session, app_id=app_keys["app_id"])
        return synced.get(late) == rule_fingerprint(TEHRAN)

    await eventually(recorded)
    assert await scheduler.tick_app(app_keys["app_id"], settled_at) == 0

    # Archived: gone from the users' segments at once, its memberships at the next tick.
    assert (await http.delete(f"/admin/v1/segments/{late}", headers=keys)).status_code == 200
    assert await in_segment(late) == set()
    assert await in_segment(segment_id) == {"s-1"}

    async def emptied() -> bool:
        await scheduler.tick_app(app_keys["app_id"], datetime.now(UTC))
        return await members_csv(http, app_keys, late) == []

    await eventually(emptied)
    assert [r["user_key"] for r in await members_csv(http, app_keys, segment_id)] == ["s-1"]


# --- goal comparison of trackers (PRODUCT.md scenario 3, small) -------------------------------

GOAL = {
    "all": [
        {"last_seen": {"op": "after", "ago": {"days": 7}}},
        {"event": "$purchase", "count": {"op": "gte", "value": 5}},
    ]
}
# Tracker → purchases of each user it brought (≥ 5 meets the goal). "multi" also installs
# on a second device through influencer_b's link: still one user, influencer_a's.
TRACKERS: dict[str, tuple[str, list[int]]] = {
    "influencer_a": ("instagram_story", [5, 6, 0]),
    "influencer_b": ("telegram", [7, 5]),
    "influencer_c": ("instagram_bio", [5, 1, 2, 0]),
    "landing": ("landing_page", [4]),
}


async def install_through(
    http: httpx.AsyncClient,
    keys: dict[str, str],
    token: str,
    user: str,
    device: str,
    **props: Any,
) -> None:
    click = await http.get(f"/c/{token}", headers=PHONE)
    referrer = parse_qs(urlsplit(click.headers["location"]).query)["referrer"][0]
    later = datetime.now(UTC) + timedelta(minutes=2)
    install = event("$install", user, later, props={"referrer": referrer, **props})
    await send(http, keys, [{**install, "device_id": device}])


async def test_trackers_ranked_by_a_goal(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    keys = admin(app_keys)
    tokens: dict[str, str] = {}
    for name, (channel, _) in TRACKERS.items():
        r = await http.post(
            "/admin/v1/trackers",
            headers=keys,
            json={"name": name, "channel": channel, "store_url": "https://example.com/app"},
        )
        tokens[name] = r.json()["token"]
    users: dict[str, tuple[str, int]] = {}  # user → (tracker name, purchases)
    for name, (_, purchases) in TRACKERS.items():
        for i, n in enumerate(purchases):
            users[f"{name}-{i}"] = (name, n)
    users["multi"] = ("influencer_a", 5)
    now = datetime.now(UTC)
    for user, (name, n) in users.items():
        await install_through(http, app_keys, tokens[name], user, f"dev-{user}")
        buys = [event("$purchase", user, now, revenue=100, currency="IRR") for _ in range(n)]
        if buys:
            await send(http, app_keys, buys)
    # An organic user meets the goal too: counted, in no tracker's group.
    await send(
        http,
        app_keys,
        [event("$install", "organic", now)]
        + [event("$purchase", "organic", now, revenue=100, currency="IRR") for _ in range(6)],
    )
    for user, (name, n) in users.items():
        await profile_with(http, app_keys, user, purchases=n)
        await eventually(partial(_attributed_to, http, keys, user, tokens[name]))
    await profile_with(http, app_keys, "organic", purchases=6)
    # An install rejected as fraud (an emulator) credits no tracker, though its user
    # meets the goal.
    await install_through(
        http, app_keys, tokens["influencer_c"], "fraud", "dev-fraud", is_emulator=True
    )
    await send(
        http,
        app_keys,
        [event("$purchase", "fraud", now, revenue=100, currency="IRR") for _ in range(5)],
    )
    await profile_with(http, app_keys, "fraud", purchases=5)

    async def rejected() -> bool:
        profile = (await http.get("/admin/v1/users/fraud", headers=keys)).json()
        return (profile.get("attribution") or {}).get("status") == "rejected"

    await eventually(rejected)
    # The second device of "multi", through another tracker, once its install is counted
    # there (as another install of a known user, never a new user).
    await install_through(http, app_keys, tokens["influencer_b"], "multi", "dev-multi-2")
    b_installs = len(TRACKERS["influencer_b"][1]) + 1

    async def counted() -> bool:
        return await _installs(http, keys, tokens["influencer_b"]) == b_installs

    await eventually(counted, within=40)

    expected = {}
    for name in TRACKERS:
        brought = [n for (t, n) in users.values() if t == name]
        matching = sum(n >= 5 for n in brought)
        expected[tokens[name]] = (len(brought), matching, matching / len(brought))
    total = sum(n >= 5 for _, n in users.values()) + 2  # and the organic and fraud users
    for rank_by in ("matching", "share"):
        r = await http.post(
            "/admin/v1/segments/preview",
            headers=keys,
            json={"rule": GOAL, "group_by": "tracker", "rank_by": rank_by},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["count"] == total
        got = {
            g["tracker_token"]: (g["attributed_users"], g["matching"], g["share"])
            for g in body["groups"]
        }
        assert got == expected
        names = {g["tracker_token"]: g["name"] for g in body["groups"]}
        assert names == {tokens[n]: n for n in TRACKERS}
        other = 2 if rank_by == "matching" else 1
        first = 1 if rank_by == "matching" else 2
        ranked = sorted(expected, key=lambda t: (-expected[t][first], -expected[t][other], t))
        assert [g["tracker_token"] for g in body["groups"]] == ranked
    # Scenario 3 ranks by share: influencer_b's users met the goal most often.
    assert body["groups"][0]["tracker_token"] == tokens["influencer_b"]

    saved = await create_segment(http, app_keys, "Goal", GOAL)
    by_saved = await http.get(
        f"/admin/v1/segments/{saved}/preview",
        headers=keys,
        params={"group_by": "tracker", "rank_by": "share"},
    )
    assert by_saved.json() == body


async def _attributed_to(
    http: httpx.AsyncClient, keys: dict[str, str], user: str, token: str
) -> bool:
    profile = (await http.get(f"/admin/v1/users/{user}", headers=keys)).json()
    return (profile.get("attribution") or {}).get("tracker_token") == token


async def _installs(http: httpx.AsyncClient, keys: dict[str, str], token: str) -> int:
    """The tracker's installs in the tracker report (ClickHouse)."""
    today = datetime.now(UTC).date()
    params = {
        "from": (today - timedelta(days=1)).isoformat(),
        "to": (today + timedelta(days=1)).isoformat(),
    }
    r = await http.get("/admin/v1/reports/trackers", headers=keys, params=params)
    rows = {row["key"]: row for row in r.json()["rows"]}
    return int(rows.get(token, {}).get("installs", 0))
