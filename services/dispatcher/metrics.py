"""Prometheus collectors of the dispatcher service."""

from prometheus_client import Counter

SENDS = Counter("hodhod_dispatcher_sends_total", "Send jobs handled", ["channel", "status"])
