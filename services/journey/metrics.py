"""Prometheus collectors of the journey service."""

from prometheus_client import Counter

RUNS = Counter("hodhod_journey_runs_started_total", "Journey runs started")
