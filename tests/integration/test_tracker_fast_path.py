"""The tracker's fast routes answer as their FastAPI twins did: the same redirect,
404 page, pixel and headers, the same ``ClickRecorded`` on the topic (decoded against
the contract), the same counters. A GET declaring a body (``Content-Length: 0``) is left
to FastAPI by the fast path, so it reaches the twin: the two are compared side by side."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from libs.schemas import ClickRecorded, ContractError, decode
from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration

PHONE = "Mozilla/5.0 (Linux; Android 14; SM-A546E) AppleWebKit/537.36 Chrome/124.0 Mobile"
TWIN = {"Content-Length": "0"}  # the fast path leaves a declared body to FastAPI


async def _tracker(http: httpx.AsyncClient, app_keys: dict[str, str]) -> str:
    created = await http.post(
        "/admin/v1/trackers",
        headers={"Authorization": f"Bearer {app_keys['admin_token']}"},
        json={
            "name": "fast",
            "channel": "web",
            "store_url": "https://play.google.com/store/apps/details?id=ir.fast&hl=fa",
            "redirect_domains": ["shop.example"],
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


def _click_id(location: str) -> str:
    referrer = parse_qs(urlsplit(location).query)["referrer"][0]
    return parse_qs(referrer)["click_id"][0]


def _headers(answer: httpx.Response) -> list[tuple[str, str]]:
    """The answer's headers in order, those that differ by design blanked (the date,
    the click id in the location)."""
    out = []
    for name, value in answer.headers.multi_items():
        if name == "date":
            value = "-"
        elif name == "location":
            value = value.replace(_click_id(value), "CLICK")
        out.append((name, value))
    return out


async def _clicks(platform: Platform, app_id: str, count: int) -> dict[str, ClickRecorded]:
    """The app's click records on ``clicks``, decoded against the contract, by id."""
    consumer = AIOKafkaConsumer(
        "clicks",
        bootstrap_servers=platform.settings.kafka_bootstrap,
        group_id=f"test.tracker-fast.{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    found: dict[str, ClickRecorded] = {}
    try:

        async def all_there() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        click = decode(ClickRecorded, record.value or b"")
                    except ContractError:
                        continue  # other tests put garbage on topics on purpose
                    if click.app_id == app_id:
                        found[click.click_id] = click
            return len(found) >= count

        await eventually(all_there)
    finally:
        await consumer.stop()
    return found


async def test_click_answers_and_records_as_its_twin(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    token = await _tracker(http, app_keys)
    request: dict[str, Any] = {
        "params": {"adid": "AB-12\x00cd", "redirect": "https://m.shop.example/p?x=1&y=دو"},
        "headers": {
            "User-Agent": PHONE,
            "Accept-Language": "fa-IR,fa;q=0.9",
            "Referer": "https://www.instagram.com/",
            "X-Request-Id": "req-1",
        },
    }
    fast = await http.get(f"/c/{token}", **request)
    twin = await http.get(
        f"/c/{token}", params=request["params"], headers={**request["headers"], **TWIN}
    )
    assert fast.status_code == twin.status_code == 302
    assert _headers(fast) == _headers(twin)
    assert fast.headers["x-request-id"] == "req-1"
    assert fast.headers["location"].startswith("https://m.shop.example/p?x=1&y=%D8%AF%D9%88&")
    fast_id, twin_id = _click_id(fast.headers["location"]), _click_id(twin.headers["location"])
    clicks = await _clicks(platform, app_keys["app_id"], 2)
    recorded = clicks[fast_id]
    assert recorded.model_dump(exclude={"click_id", "ts"}) == clicks[twin_id].model_dump(
        exclude={"click_id", "ts"}
    )
    assert (recorded.tracker_token, recorded.kind, recorded.is_bot) == (token, "click", False)
    assert (recorded.adid, recorded.user_agent) == ("AB-12cd", PHONE)
    assert (recorded.accept_language, recorded.referer) == (
        "fa-IR,fa;q=0.9",
        "https://www.instagram.com/",
    )
    assert recorded.redirect_url == request["params"]["redirect"]
    assert recorded.ip == "127.0.0.1"


async def test_impressions_and_unknown_links_answer_as_their_twins(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    token = await _tracker(http, app_keys)
    for path in (
        f"/i/{token}",  # the pixel
        "/i/unknown-token",  # an empty 404
        "/c/unknown-token",  # the 404 page
        "/c/not.a.token",
        "/c/" + "x" * 33,
    ):
        fast = await http.get(path, headers={"User-Agent": PHONE, "X-Request-Id": "r"})
        twin = await http.get(path, headers={"User-Agent": PHONE, "X-Request-Id": "r", **TWIN})
        assert (fast.status_code, fast.content) == (twin.status_code, twin.content), path
        assert _headers(fast) == _headers(twin), path
    pixel = await http.get(f"/i/{token}", headers={"User-Agent": PHONE})
    assert (pixel.status_code, pixel.headers["content-type"]) == (200, "image/gif")
    assert pixel.headers["cache-control"] == "no-store"
    page = await http.get("/c/unknown-token")
    assert page.status_code == 404 and "not active" in page.text
    impressions = await _clicks(platform, app_keys["app_id"], 3)
    assert {c.kind for c in impressions.values()} == {"impression"}


async def test_other_methods_and_paths_answer_as_before(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    token = await _tracker(http, app_keys)
    for method in ("HEAD", "POST", "PUT"):
        assert (await http.request(method, f"/c/{token}")).status_code == 405, method
    assert (await http.post(f"/c/{token}")).json()["error"]["code"] == "method_not_allowed"
    deeper = await http.get(f"/c/{token}/more")
    assert (deeper.status_code, deeper.json()["error"]["code"]) == (404, "not_found")
    assert (await http.get("/c/")).status_code == 404


def _sample(metrics: str, line_start: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_counters_count_fast_answers(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    token = await _tracker(http, app_keys)
    names = {
        "redirects": 'hodhod_http_requests_total{method="GET",route="/c/{token}",status="3xx"}',
        "pages": 'hodhod_http_requests_total{method="GET",route="/c/{token}",status="4xx"}',
        "pixels": 'hodhod_http_requests_total{method="GET",route="/i/{token}",status="2xx"}',
        "timed": 'hodhod_http_request_seconds_count{method="GET",route="/c/{token}"}',
        "clicks": 'hodhod_tracker_clicks_total{outcome="click"}',
        "bots": 'hodhod_tracker_clicks_total{outcome="bot"}',
        "impressions": 'hodhod_tracker_clicks_total{outcome="impression"}',
        "unknown": 'hodhod_tracker_clicks_total{outcome="unknown"}',
    }

    async def read() -> dict[str, float]:
        text = (await http.get("/metrics")).text
        return {key: _sample(text, name) for key, name in names.items()}

    before = await read()
    await http.get(f"/c/{token}", headers={"User-Agent": PHONE})
    await http.get(f"/c/{token}", headers={"User-Agent": "curl/8.5.0"})
    await http.get(f"/c/{token}", headers={"User-Agent": PHONE, **TWIN})
    await http.get("/c/unknown-token")
    await http.get(f"/i/{token}", headers={"User-Agent": PHONE})
    after = await read()
    assert {key: after[key] - before[key] for key in names} == {
        "redirects": 3,
        "pages": 1,
        "pixels": 1,
        "timed": 4,
        "clicks": 2,
        "bots": 1,
        "impressions": 1,
        "unknown": 1,
    }
