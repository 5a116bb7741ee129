"""What every HTTP service answers: probes, metrics, request ids, error envelopes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import eventually

pytestmark = pytest.mark.integration


async def test_probes_and_metrics(http: httpx.AsyncClient, app_keys: dict[str, str]) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "postgres": True,
        "kafka": True,
        "clickhouse": True,
        "consumers": True,
        "timed": True,
    }
    await http.get("/c/unknown-token")
    now = datetime.now(UTC).isoformat()
    await http.post(
        "/v1/events",
        headers={"X-Hodhod-Key": app_keys["sdk_key"]},
        json={
            "events": [
                {"event_id": str(uuid.uuid4()), "name": "$open", "device_id": "m", "ts": now}
            ]
        },
    )

    async def batch_observed() -> str | None:
        text = (await http.get("/metrics")).text
        return text if 'hodhod_consumer_batch_seconds_count{consumer="segmenter' in text else None

    metrics = await eventually(batch_observed)
    for name in (
        "hodhod_consumer_records_total",
        "hodhod_consumer_batch_seconds_bucket",
        "hodhod_consumer_dlq_total",
        "hodhod_consumer_failures_total",
        "hodhod_http_requests_total",
        "hodhod_tracker_clicks_total",
    ):
        assert name in metrics, name
    assert 'route="/c/{token}"' in metrics  # labels are route templates, not raw paths


async def test_request_ids_are_echoed_or_made(http: httpx.AsyncClient) -> None:
    given = await http.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await http.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32


async def test_unknown_route_and_method_use_the_envelope(http: httpx.AsyncClient) -> None:
    missing = await http.get("/no/such/route")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await http.delete("/healthz")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_openapi_has_stable_operation_ids(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {
        "post_events",
        "track_click",
        "create_tracker",
        "update_tracker",
        "archive_tracker",
        "create_segment",
        "get_user",
        "get_user_timeline",
        "list_deliveries",
        "report_retention",
        "report_churn",
    } <= ids
