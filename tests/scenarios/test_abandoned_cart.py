"""PRODUCT.md scenario 4 — abandoned cart: cart added, no purchase → after 2 hours a push
"10% off if you buy within 24 hours"; still no purchase → a second reminder; a purchase
exits the journey at once and is counted as a conversion. Over HTTP and topics, on the
clocked platform (the test moves time)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest

from tests.conftest import eventually
from tests.scenarios.conftest import Clocked, Jobs, Sdk, admin

pytestmark = pytest.mark.integration

CART = {
    "trigger": {"type": "event", "event": "add_to_cart", "dedup_key": "cart_id"},
    "definition": {
        "start": "two_hours",
        "nodes": [
            {"id": "two_hours", "type": "wait", "duration": {"hours": 2}, "next": "offer"},
            {
                "id": "offer",
                "type": "send",
                "channel": "push",
                "content": {
                    "title": "{{ product }}",
                    "body": "10% off if you buy within 24 hours",
                },
                "expires_after": {"hours": 24},
                "next": "bought",
            },
            {
                "id": "bought",
                "type": "wait_for_event",
                "event": "$purchase",
                "where": [{"prop": "cart_id", "op": "eq", "from_trigger": "cart_id"}],
                "timeout": {"hours": 24},
                "on_event": "done",
                "on_timeout": "reminder",
            },
            {
                "id": "reminder",
                "type": "send",
                "channel": "push",
                "content": {"body": "Your cart is waiting — last chance for 10% off"},
            },
            {"id": "done", "type": "exit"},
        ],
        "goal": {"event": "$purchase", "within": {"days": 3}},
        "entry": {"reentry": "always", "max_concurrent": 3},
    },
}


async def test_abandoned_cart(
    clocked: Clocked,
    clocked_http: httpx.AsyncClient,
    clocked_keys: dict[str, str],
    sdk: Sdk,
    jobs: Jobs,
) -> None:
    created = await clocked_http.post(
        "/admin/v1/journeys", headers=admin(clocked_keys), json={"name": "Abandoned cart", **CART}
    )
    assert created.status_code == 201, created.text
    journey_id = created.json()["id"]
    forgetful, buyer = f"u-{uuid.uuid4().hex[:6]}", f"u-{uuid.uuid4().hex[:6]}"
    for user, cart in ((forgetful, "c-1"), (buyer, "c-2")):
        await sdk.send(
            "add_to_cart",
            device_id=f"dev-{user}",
            user_id=user,
            props={"cart_id": cart, "product": "iPhone X"},
        )

    async def entered() -> bool:
        r = await clocked_http.get(
            f"/admin/v1/journeys/{journey_id}/stats", headers=admin(clocked_keys)
        )
        return r.json()["runs"] == 2

    await eventually(entered)
    clocked.clock.advance(timedelta(hours=1, minutes=59))
    await jobs.quiet(forgetful, expect=0)
    clocked.clock.advance(timedelta(minutes=1))
    (offer,) = await jobs.of(forgetful, count=1)
    (buyer_offer,) = await jobs.of(buyer, count=1)
    assert buyer_offer.job_id != offer.job_id
    assert (offer.step_id, offer.channel, offer.journey_id) == ("offer", "push", journey_id)
    assert offer.content is not None and offer.content.body == "10% off if you buy within 24 hours"
    assert offer.context["product"] == "iPhone X"
    assert offer.expires_at == clocked.clock.now() + timedelta(hours=24)

    # The buyer purchases this cart: the run exits at once, a conversion.
    await sdk.send(
        "$purchase",
        device_id=f"dev-{buyer}",
        user_id=buyer,
        props={"cart_id": "c-2"},
        revenue=45_000_000,
        currency="IRR",
    )

    async def converted() -> dict | None:
        r = await clocked_http.get(
            f"/admin/v1/journeys/{journey_id}/stats", headers=admin(clocked_keys)
        )
        return r.json() if r.json()["converted"] == 1 else None

    stats = await eventually(converted)
    nodes = {n["node_id"]: n for n in stats["nodes"]}
    assert nodes["bought"]["converted"] == 1 and nodes["bought"]["waiting"] == 1
    assert stats["variants"][0]["rate"] == 0.5

    clocked.clock.advance(timedelta(hours=24))
    (_, reminder) = await jobs.of(forgetful, count=2)
    assert reminder.step_id == "reminder"
    await jobs.quiet(buyer, expect=1)  # exited: no reminder
    r = await clocked_http.get(
        f"/admin/v1/journeys/{journey_id}/stats", headers=admin(clocked_keys)
    )
    nodes = {n["node_id"]: n for n in r.json()["nodes"]}
    assert nodes["reminder"]["entered"] == 1 and nodes["reminder"]["exited"] == 1
