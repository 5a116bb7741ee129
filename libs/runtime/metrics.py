"""Prometheus collectors of the service kit (consumers, producers, HTTP, timed work).

Collectors live at module level, as prometheus_client intends: they are process-wide
counters, not configuration. Labels are bounded (consumer group, topic, partition,
route template, status class, timed work name).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMER_RECORDS = Counter(
    "hodhod_consumer_records_total", "Records taken from Kafka", ["consumer", "topic"]
)
CONSUMER_FAILURES = Counter(
    "hodhod_consumer_failures_total",
    "Batch failures by kind: transient (retried) or fatal (consumer stopped)",
    ["consumer", "kind"],
)
CONSUMER_DLQ = Counter(
    "hodhod_consumer_dlq_total", "Records sent to the dead-letter topic", ["consumer", "topic"]
)
CONSUMER_BATCH_SECONDS = Histogram(
    "hodhod_consumer_batch_seconds",
    "Time to handle one batch, commit included",
    ["consumer"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "hodhod_consumer_lag_records",
    "High watermark minus committed position (unreliable on Tansu)",
    ["consumer", "topic", "partition"],
)
PRODUCER_FAILURES = Counter(
    "hodhod_producer_failures_total", "Records the broker did not acknowledge", ["topic"]
)
HTTP_REQUESTS = Counter(
    "hodhod_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "hodhod_http_request_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
# Timed work (libs.runtime.timed), labelled by the work's name (one per kind of due row).
TIMED_CLAIMED = Counter(
    "hodhod_timed_claimed_total", "Due items claimed and handled (committed)", ["work"]
)
TIMED_LAG = Gauge(
    "hodhod_timed_lag_seconds",
    "How long the oldest item of the last claim had been due (0 when nothing was due)",
    ["work"],
)
TIMED_BATCH_SECONDS = Histogram(
    "hodhod_timed_batch_seconds",
    "Time to claim, handle and commit one non-empty batch of due items",
    ["work"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TIMED_FAILURES = Counter(
    "hodhod_timed_failures_total",
    "Failed rounds by kind: transient (retried) or fatal (runner stopped)",
    ["work", "kind"],
)
