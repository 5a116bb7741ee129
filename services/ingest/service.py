"""Wiring of the ingest service: the SDK API and the warehouse writer."""

from __future__ import annotations

from libs.runtime.pipeline import BatchPolicy
from libs.runtime.service import ServiceSpec, one_consumer
from services.ingest.api import router
from services.ingest.warehouse import TABLES, WarehouseWriter

SERVICE = ServiceSpec(
    name="ingest",
    routers=lambda: [router],
    consumers=one_consumer(
        "ingest.warehouse",
        sorted(TABLES),
        lambda r: WarehouseWriter(r.require_clickhouse()),
        # ClickHouse wants few large inserts: up to 50,000 rows, 64 MB or 1 s per batch.
        BatchPolicy(max_records=50_000, max_bytes=64 * 1024 * 1024, max_wait_s=1.0),
    ),
    needs_clickhouse=True,
)
