"""Prometheus collectors of the tracker service."""

from prometheus_client import Counter

CLICKS = Counter("hodhod_tracker_clicks_total", "Clicks answered", ["outcome"])
PUBLISH_FAILURES = Counter(
    "hodhod_tracker_publish_failures_total", "Clicks the broker did not acknowledge"
)
