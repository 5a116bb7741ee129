"""Prometheus collectors of the attribution service."""

from prometheus_client import Counter

ATTRIBUTIONS = Counter(
    "hodhod_attribution_installs_total", "Installs attributed, by method", ["method"]
)
