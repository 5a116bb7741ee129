"""Wiring of the journey service: the trigger consumer."""

from libs.runtime.service import ServiceSpec, one_consumer
from services.journey.consumer import TOPICS, TriggerHandler

SERVICE = ServiceSpec(
    name="journey",
    consumers=one_consumer(
        "journey.triggers", TOPICS, lambda r: TriggerHandler(r.sessions, r.producer)
    ),
)
