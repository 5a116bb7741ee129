"""``POST /v1/events``: the SDK event API."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request

from libs.runtime.deps import ProducerDep
from libs.runtime.errors import HodhodError, PayloadTooLarge
from libs.runtime.tenancy import SdkAppDep
from services.ingest import logic
from services.ingest.metrics import EVENTS

router = APIRouter(tags=["ingest"])

MAX_INFLATED_BYTES = 8 * 1_048_576


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = inflater.decompress(body, MAX_INFLATED_BYTES)
            if inflater.unconsumed_tail:
                raise PayloadTooLarge(f"inflated body exceeds {MAX_INFLATED_BYTES} bytes")
        except (zlib.error, gzip.BadGzipFile):
            raise HodhodError("body is not valid gzip", code="malformed_gzip") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HodhodError("request body is not valid JSON", code="malformed_json") from None


@router.post("/v1/events", operation_id="post_events")
async def post_events(request: Request, app_id: SdkAppDep, producer: ProducerDep) -> dict[str, Any]:
    """Accept a batch; answers after every accepted record is acknowledged by Kafka."""
    body = await _json_body(request)
    result = logic.parse_batch(
        body,
        app_id=app_id,
        received_at=datetime.now(UTC),
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    await producer.publish_all([*result.events, *result.installs])
    EVENTS.labels("accepted").inc(len(result.events))
    EVENTS.labels("rejected").inc(len(result.rejected))
    return {
        "accepted": len(result.events),
        "rejected": [
            {"index": r.index, "field": r.field, "reason": r.reason} for r in result.rejected
        ],
    }
