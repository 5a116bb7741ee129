"""Prometheus collectors of the attribution service."""

from prometheus_client import Counter

ATTRIBUTIONS = Counter(
    "hodhod_attribution_installs_total", "Installs attributed, by method", ["method"]
)
POSTBACK_ATTEMPTS = Counter(
    "hodhod_attribution_postback_attempts_total",
    "Calls to networks' postback URLs, by kind (install, event) and outcome (delivered, "
    "refused: a 4xx or a bad URL, failed: retried or given up)",
    ["kind", "outcome"],
)
ERASURES = Counter(
    "hodhod_attribution_erasures_total",
    "Users' attribution data erased (admin's erasure), redeliveries not counted",
)
