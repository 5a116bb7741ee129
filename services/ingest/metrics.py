"""Prometheus collectors of the ingest service."""

from prometheus_client import Counter

EVENTS = Counter("hodhod_ingest_events_total", "SDK and S2S events by outcome", ["outcome"])
RATE_LIMITED = Counter(
    "hodhod_ingest_rate_limited_requests_total",
    "Event requests refused with 429 by the per-key rate limit",
    ["source"],
)
RATE_LIMITED_EVENTS = Counter(
    "hodhod_ingest_rate_limited_events_total",
    "Events in requests refused with 429 by the per-key rate limit",
    ["source"],
)
VERIFICATIONS = Counter(
    "hodhod_ingest_verifications_total", "UserVerified records published by /v1/s2s/verify"
)
WAREHOUSE_ROWS = Counter(
    "hodhod_ingest_warehouse_rows_total", "Rows inserted into ClickHouse", ["table"]
)
WAREHOUSE_ERASURES = Counter(
    "hodhod_ingest_warehouse_erasures_total", "Users whose raw rows were erased from ClickHouse"
)
SIGNATURES = Counter(
    "hodhod_ingest_signatures_total",
    "Signed-SDK checks of apps that require signing, by verdict",
    ["verdict"],
)
