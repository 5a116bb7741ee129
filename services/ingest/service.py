"""Wiring of the ingest service: the SDK API and the warehouse writer."""

from __future__ import annotations

from libs.runtime.service import ServiceSpec, one_consumer
from services.ingest.api import router
from services.ingest.warehouse import TABLES, WarehouseWriter

SERVICE = ServiceSpec(
    name="ingest",
    routers=lambda: [router],
    consumers=one_consumer(
        "ingest.warehouse", sorted(TABLES), lambda r: WarehouseWriter(r.require_clickhouse())
    ),
    needs_clickhouse=True,
)
