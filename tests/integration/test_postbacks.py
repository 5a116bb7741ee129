"""Postbacks against a local HTTP server speaking plain HTTP: macros filled and encoded,
a failing network retried with backoff, every attempt recorded, replays free."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from libs.runtime.settings import PlatformSettings
from libs.schemas import UserAttributed
from services.attribution.postbacks import Postbacks
from tests.conftest import Platform, eventually, local_http_server

pytestmark = pytest.mark.integration


class Network:
    """An ad network's postback endpoint: fails the first call, then accepts."""

    def __init__(self) -> None:
        self.calls: list[dict[str, list[str]]] = []

    async def postback(self, request: Request) -> PlainTextResponse:
        self.calls.append(parse_qs(request.url.query))
        return PlainTextResponse(
            "err" if len(self.calls) == 1 else "ok",
            status_code=500 if len(self.calls) == 1 else 200,
        )


async def test_postbacks_are_retried_recorded_and_not_repeated(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    network = Network()
    async with local_http_server(Starlette(routes=[Route("/pb", network.postback)])) as base:
        admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
        created = await http.post(
            "/admin/v1/trackers",
            headers=admin,
            json={
                "name": "Yektanet banner",
                "channel": "web",
                "network": "Yektanet",
                "campaign": "پاییز",
                "store_url": "https://example.com/app",
                "postback_urls": [
                    f"{base}/pb?click={{click_id}}&t={{tracker}}"
                    "&c={campaign}&u={user_key}&at={install_ts}"
                ],
            },
        )
        token = created.json()["token"]
        click = await http.get(
            f"/c/{token}", headers={"User-Agent": "Mozilla/5.0 (Linux; Android 14)"}
        )
        referrer = parse_qs(urlsplit(click.headers["location"]).query)["referrer"][0]
        click_id = parse_qs(referrer)["click_id"][0]
        device = f"dev-{uuid.uuid4().hex[:6]}"
        ts = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        await http.post(
            "/v1/events",
            headers={"X-Hodhod-Key": app_keys["sdk_key"]},
            json={
                "events": [
                    {
                        "event_id": str(uuid.uuid4()),
                        "name": "$install",
                        "device_id": device,
                        "ts": ts,
                        "props": {"referrer": referrer},
                    }
                ]
            },
        )

        async def delivered() -> bool:
            return len(network.calls) >= 2

        await eventually(delivered, within=30)
        await asyncio.sleep(0.3)
        assert len(network.calls) == 2  # one failure, one retry, then done
        call = network.calls[-1]
        assert call["click"] == [click_id] and call["t"] == [token]
        assert call["c"] == ["پاییز"] and call["u"] == [f"d:{device}"]

        resources = platform.app.state.resources
        async with resources.sessions() as session:
            attempts = (
                await session.execute(
                    text(
                        "SELECT attempt, http_status, delivered FROM attribution_postbacks "
                        "WHERE app_id = :a ORDER BY attempt"
                    ),
                    {"a": app_keys["app_id"]},
                )
            ).all()
            attribution_id = (
                await session.execute(
                    text("SELECT attribution_id FROM attribution_installs WHERE app_id = :a"),
                    {"a": app_keys["app_id"]},
                )
            ).scalar_one()
        assert [tuple(r) for r in attempts] == [(1, 500, False), (2, 200, True)]

        # A replayed UserAttributed calls nobody again.
        from libs.runtime.pipeline import Batch, Record

        replay = UserAttributed(
            app_id=app_keys["app_id"],
            attribution_id=attribution_id,
            user_key=f"d:{device}",
            device_id=device,
            install_event_id="x",
            install_ts=datetime.now(UTC),
            attributed_at=datetime.now(UTC),
            method="click_id",
            kind="new_user",
            status="attributed",
            tracker_token=token,
            click_id=click_id,
        )
        await Postbacks(resources.sessions, backoff_s=0.01)(
            Batch(records=[Record("attributions", 0, 0, None, replay, 0)])
        )
        assert len(network.calls) == 2


async def test_the_process_http_pool_is_shared_and_closed_with_the_resources(
    settings: PlatformSettings,
) -> None:
    """Postbacks call out through the process's one pool (``Resources.http``), which
    ``open_resources`` closes on shutdown: no client outlives the process's lifespan."""
    from libs.runtime.resources import open_resources
    from services.attribution.service import postbacks

    async with open_resources(settings, with_clickhouse=False) as resources:
        client = resources.http
        (runner,) = postbacks(resources)
        assert runner._handler._client is client  # type: ignore[attr-defined]
        assert not client.is_closed
    assert client.is_closed
