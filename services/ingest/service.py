"""Wiring of the ingest service: the SDK API and the warehouse writer."""

from __future__ import annotations

from collections.abc import Sequence

from libs.runtime.pipeline import ConsumerRunner
from libs.runtime.resources import Resources
from libs.runtime.service import ServiceSpec
from services.ingest.api import router
from services.ingest.warehouse import TABLES, WarehouseWriter


def consumers(resources: Resources) -> Sequence[ConsumerRunner]:
    return [
        ConsumerRunner(
            group="ingest.warehouse",
            topics=sorted(TABLES),
            handler=WarehouseWriter(resources.require_clickhouse()),
            settings=resources.settings,
            dlq_producer=resources.producer,
        )
    ]


SERVICE = ServiceSpec(
    name="ingest", routers=lambda: [router], consumers=consumers, needs_clickhouse=True
)
