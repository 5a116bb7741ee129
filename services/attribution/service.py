"""Wiring of the attribution service: the matcher consumer and the verification sweep."""

from libs.runtime.service import ServiceSpec, one_consumer
from services.attribution.consumer import TOPICS, Matcher
from services.attribution.sweep import VerificationSweep

SERVICE = ServiceSpec(
    name="attribution",
    consumers=one_consumer(
        "attribution.matcher", TOPICS, lambda r: Matcher(r.sessions, r.producer)
    ),
    tasks=lambda r: [VerificationSweep(r.sessions, r.producer).run()],
)
