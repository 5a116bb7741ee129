"""Wiring of the attribution service: the matcher consumer."""

from libs.runtime.service import ServiceSpec, one_consumer
from services.attribution.consumer import TOPICS, Matcher

SERVICE = ServiceSpec(
    name="attribution",
    consumers=one_consumer(
        "attribution.matcher", TOPICS, lambda r: Matcher(r.sessions, r.producer)
    ),
)
