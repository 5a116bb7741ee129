"""Prometheus collectors of the journey service."""

from prometheus_client import Counter

RUNS = Counter("hodhod_journey_runs_started_total", "Journey runs started")
RUNS_CARRIED = Counter(
    "hodhod_journey_runs_carried_total",
    "Journey starts skipped because the user's merged anonymous profile already ran the "
    "journey (an entry with merged_from)",
)
