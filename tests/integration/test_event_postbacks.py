"""In-app event postbacks against a local HTTP server: the events a tracker chose are
posted back with their revenue (Persian text and special characters URL-encoded), other
events call nobody, replays call nobody again, a failing endpoint is retried with every
attempt recorded, events wait for an install pending verification, and calls to one
network are spaced by its rate limit."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from libs.runtime.pipeline import Batch, Record
from libs.runtime.ratelimit import TokenBuckets
from libs.schemas import Event
from services.attribution.postbacks import NetworkLimiter, Postbacks
from tests.conftest import Platform, eventually, local_http_server

pytestmark = pytest.mark.integration

PHONE = {"User-Agent": "Mozilla/5.0 (Linux; Android 14)"}
AUTUMN = "پاییز"  # the campaign
AUTUMN_Q = "%D9%BE%D8%A7%DB%8C%DB%8C%D8%B2"
SIGNUP = "ثبت‌نام"  # an event name with a zero-width non-joiner
SIGNUP_Q = "%D8%AB%D8%A8%D8%AA%E2%80%8C%D9%86%D8%A7%D9%85"
USER = "علی & co/?=1"  # a user id with characters that mean something in a URL
USER_Q = "%D8%B9%D9%84%DB%8C%20%26%20co%2F%3F%3D1"


@dataclass
class Network:
    """An ad network's endpoints: records each call's raw target (path and query as
    sent) and monotonic arrival time; ``status`` answers per path and call number."""

    status: Callable[[str, int], int] = lambda path, n: 200
    calls: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    base: str = ""

    async def endpoint(self, request: Request) -> PlainTextResponse:
        path = request.scope["raw_path"].decode()
        query = request.scope["query_string"].decode()
        self.calls.append(f"{path}?{query}" if query else path)
        self.times.append(time.monotonic())
        n = sum(1 for c in self.calls if urlsplit(c).path == path)
        return PlainTextResponse("", status_code=self.status(path, n))

    def to(self, path: str) -> list[str]:
        """The calls whose raw path starts with ``path``."""
        return [c for c in self.calls if urlsplit(c).path.startswith(path)]


class GrantLog(NetworkLimiter):
    """The real limiter, remembering when (monotonic) it let each call go."""

    def __init__(self, buckets: TokenBuckets) -> None:
        super().__init__(buckets)
        self.granted: list[float] = []

    async def wait(self, key: str) -> None:
        await super().wait(key)
        self.granted.append(time.monotonic())


@asynccontextmanager
async def serving(network: Network) -> AsyncIterator[Network]:
    async with local_http_server(
        Starlette(routes=[Route("/{path:path}", network.endpoint)])
    ) as base:
        network.base = base
        yield network


async def click_and_install(
    http: httpx.AsyncClient, keys: dict[str, str], token: str, *, also: list[dict] = ()
) -> tuple[str, str, datetime, str]:
    """A click on ``token`` and the install it brings (30 s later: no click injection),
    with ``also`` events in the same SDK request. Returns the device, click id, install
    time and install event id."""
    click = await http.get(f"/c/{token}", headers=PHONE)
    referrer = parse_qs(urlsplit(click.headers["location"]).query)["referrer"][0]
    device = f"dev-{uuid.uuid4().hex[:8]}"
    at = datetime.now(UTC) + timedelta(seconds=30)
    install = {
        "event_id": str(uuid.uuid4()),
        "name": "$install",
        "device_id": device,
        "ts": at.isoformat(),
        "platform": "android",
        "props": {"referrer": referrer},
    }
    posted = await http.post(
        "/v1/events",
        headers={"X-Hodhod-Key": keys["sdk_key"]},
        json={"events": [install, *({**e, "device_id": device} for e in also)]},
    )
    assert posted.json()["accepted"] == 1 + len(also), posted.text
    return device, parse_qs(referrer)["click_id"][0], at, install["event_id"]


async def ledger_status(platform: Platform, app_id: str, device: str) -> str | None:
    async with platform.app.state.resources.sessions() as session:
        return (
            await session.execute(
                text(
                    "SELECT status FROM attribution_installs WHERE app_id = :a AND device_id = :d"
                ),
                {"a": app_id, "d": device},
            )
        ).scalar_one_or_none()


async def event_attempts(platform: Platform, app_id: str) -> dict[str, list[tuple]]:
    """Per event id: its postback attempts as (template, attempt, http status, delivered)."""
    async with platform.app.state.resources.sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT event_id, url, attempt, http_status, delivered "
                    "FROM attribution_postbacks WHERE app_id = :a AND event_id IS NOT NULL "
                    "ORDER BY event_id, url, attempt"
                ),
                {"a": app_id},
            )
        ).all()
    out: dict[str, list[tuple]] = {}
    for event_id, *rest in rows:
        out.setdefault(event_id, []).append(tuple(rest))
    return out


def event(name: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "name": name, "ts": at.isoformat(), **fields}


def record_of(app_id: str, payload: dict[str, Any], offset: int) -> Record:
    value = Event.model_validate(
        {**payload, "app_id": app_id, "received_at": datetime.now(UTC).isoformat()}
    )
    return Record("events", 0, offset, None, value, int(time.time() * 1000))


async def test_chosen_events_are_posted_back_once_with_their_revenue(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    app_id = app_keys["app_id"]
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    sdk = {"X-Hodhod-Key": app_keys["sdk_key"]}
    # The sign-up endpoint fails its first call.
    network = Network(status=lambda path, n: 500 if path.startswith("/signup") and n == 1 else 200)
    async with serving(network):
        created = await http.post(
            "/admin/v1/trackers",
            headers=admin,
            json={
                "name": "Yektanet autumn",
                "channel": "web",
                "network": "Yektanet",
                "campaign": AUTUMN,
                "store_url": "https://example.com/app",
                "postback_urls": [
                    f"{network.base}/pb?e={{event}}&click={{click_id}}&t={{tracker}}"
                    "&c={campaign}&u={user_key}&r={revenue}&cur={currency}&id={event_id}"
                ],
                "postback_events": ["$purchase", SIGNUP],
                "event_postback_urls": {
                    SIGNUP: [f"{network.base}/signup/{{event}}?u={{user_key}}&n={{network}}"]
                },
            },
        )
        assert created.status_code == 201, created.text
        tracker = created.json()
        assert tracker["postback_events"] == ["$purchase", SIGNUP]
        token = tracker["token"]
        device, click_id, installed, install_id = await click_and_install(http, app_keys, token)
        assert await eventually(lambda: ledger_status(platform, app_id, device)) == "attributed"

        later = installed + timedelta(minutes=1)
        purchase = event(
            "$purchase",
            later,
            device_id=device,
            user_id=USER,
            revenue=125000.5,
            currency="IRR",
            props={"product": "گوشی"},
        )
        signup = event(SIGNUP, later, device_id=device, user_id=USER)
        other = event("level_up", later, device_id=device, revenue=10, currency="IRR")
        posted = await http.post(
            "/v1/events", headers=sdk, json={"events": [purchase, signup, other]}
        )
        assert posted.json()["accepted"] == 3

        async def settled() -> bool:  # the install, the purchase, the sign-up retried
            return len(network.calls) >= 4

        await eventually(settled)
        install_url = (
            f"/pb?e=install&click={click_id}&t={token}&c={AUTUMN_Q}&u=d%3A{device}&r=&cur="
            f"&id={install_id}"
        )
        purchase_url = (
            f"/pb?e=%24purchase&click={click_id}&t={token}&c={AUTUMN_Q}&u={USER_Q}"
            f"&r=125000.5&cur=IRR&id={purchase['event_id']}"
        )
        signup_url = f"/signup/{SIGNUP_Q}?u={USER_Q}&n=Yektanet"
        assert [c for c in network.calls if c.startswith("/pb?e=install")] == [install_url]
        assert [c for c in network.calls if c.startswith("/pb?e=%24purchase")] == [purchase_url]
        assert network.to("/signup") == [signup_url, signup_url]  # 500, then delivered

        # Every attempt recorded, under the event's id (each as soon as its call ended).
        async def recorded() -> dict[str, list[tuple]] | None:
            found = await event_attempts(platform, app_id)
            return found if sum(map(len, found.values())) >= 3 else None

        attempts = await eventually(recorded)
        assert {k: [(a, s, d) for _, a, s, d in v] for k, v in attempts.items()} == {
            purchase["event_id"]: [(1, 200, True)],
            signup["event_id"]: [(1, 500, False), (2, 200, True)],
        }
        assert attempts[signup["event_id"]][0][0].endswith(
            "/signup/%7Bevent%7D?u={user_key}&n={network}"
        )

        # A replay of the events (the consumer's batch redelivered) calls nobody again.
        before = list(network.calls)
        replay = Postbacks(platform.app.state.resources.sessions, backoff_s=0.01)
        await replay(
            Batch(
                records=[record_of(app_id, e, i) for i, e in enumerate([purchase, signup, other])]
            )
        )
        assert network.calls == before
        # Nor did the event no tracker chose call anyone, then or now.
        assert not [c for c in network.calls if "level_up" in c]
        assert len(network.calls) == 4


async def test_events_wait_for_their_install_to_be_verified(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    app_id = app_keys["app_id"]
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    network = Network()
    async with serving(network):
        token = (
            await http.post(
                "/admin/v1/trackers",
                headers=admin,
                json={
                    "name": "Pay per verified user",
                    "channel": "instagram_story",
                    "store_url": "https://example.com/app",
                    "counting": "on_verification",
                    "postback_urls": [f"{network.base}/pb?e={{event}}&r={{revenue}}"],
                    "postback_events": ["$purchase"],
                },
            )
        ).json()["token"]
        # The purchase rides in the same SDK request as the install: it reaches the
        # postbacks consumer before the install is attributed, and then the install is
        # pending verification. It waits.
        soon = datetime.now(UTC) + timedelta(minutes=1)
        purchase = event("$purchase", soon, revenue=99.0, currency="USD")
        device, *_ = await click_and_install(http, app_keys, token, also=[purchase])

        async def held() -> bool:
            async with platform.app.state.resources.sessions() as session:
                found = await session.scalar(
                    text(
                        "SELECT count(*) FROM attribution_postback_holds "
                        "WHERE app_id = :a AND event_id = :e"
                    ),
                    {"a": app_id, "e": purchase["event_id"]},
                )
            pending = await ledger_status(platform, app_id, device) == "pending"
            return bool(found) and pending

        await eventually(held)
        assert network.calls == []

        answer = await http.post(
            "/v1/s2s/verify",
            headers={"Authorization": f"Bearer {app_keys['server_key']}"},
            json={
                "user_id": f"u-{device}",
                "device_id": device,
                "ts": datetime.now(UTC).isoformat(),
                "method": "otp",
            },
        )
        assert answer.status_code == 202, answer.text

        async def both() -> bool:
            return len(network.calls) >= 2

        await eventually(both)
        # The install first, then the purchase it waited for.
        assert network.calls == ["/pb?e=install&r=", "/pb?e=%24purchase&r=99"]

        async def released() -> bool:  # once the call is recorded
            async with platform.app.state.resources.sessions() as session:
                left = await session.scalar(
                    text("SELECT count(*) FROM attribution_postback_holds WHERE app_id = :a"),
                    {"a": app_id},
                )
            return left == 0

        await eventually(released)


async def test_calls_to_one_network_are_spaced_by_its_rate_limit(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    app_id = app_keys["app_id"]
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    network = Network()
    async with serving(network):
        token = (
            await http.post(
                "/admin/v1/trackers",
                headers=admin,
                json={
                    "name": "Rate limited",
                    "channel": "web",
                    "network": "Tapsell",
                    "store_url": "https://example.com/app",
                    "postback_events": ["tick"],
                    "event_postback_urls": {"tick": [f"{network.base}/tick?id={{event_id}}"]},
                },
            )
        ).json()["token"]
        device, _, installed, _ = await click_and_install(http, app_keys, token)
        assert await eventually(lambda: ledger_status(platform, app_id, device)) == "attributed"

        # Four events handed straight to a consumer allowed 5 calls a second, no burst.
        rate = 5.0
        ticks = [
            event("tick", installed + timedelta(seconds=i), device_id=device) for i in range(4)
        ]
        limiter = GrantLog(TokenBuckets(rate_per_s=rate, burst=1))
        limited = Postbacks(platform.app.state.resources.sessions, limiter=limiter)
        await limited(Batch(records=[record_of(app_id, e, i) for i, e in enumerate(ticks)]))

        assert sorted(network.calls) == sorted(f"/tick?id={e['event_id']}" for e in ticks)
        # Each call waited for its token: consecutive grants are at least 1/rate apart,
        # and no call reached the network before its grant. Arrivals themselves are not
        # compared pairwise: on a loaded machine one request may cross the loopback late
        # and the next on time.
        grants = sorted(limiter.granted)
        assert len(grants) == len(ticks)
        gaps = [b - a for a, b in itertools.pairwise(grants)]
        assert min(gaps) >= 1 / rate - 0.005
        arrivals = sorted(network.times)
        assert all(a >= g for a, g in zip(arrivals, grants, strict=True))
