"""Prometheus collectors of the ingest service."""

from prometheus_client import Counter

EVENTS = Counter("hodhod_ingest_events_total", "SDK events by outcome", ["outcome"])
WAREHOUSE_ROWS = Counter(
    "hodhod_ingest_warehouse_rows_total", "Rows inserted into ClickHouse", ["table"]
)
