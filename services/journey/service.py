"""Wiring of the journey service: the trigger consumer."""

from __future__ import annotations

from collections.abc import Sequence

from libs.runtime.pipeline import ConsumerRunner
from libs.runtime.resources import Resources
from libs.runtime.service import ServiceSpec
from services.journey.consumer import TOPICS, TriggerHandler


def consumers(resources: Resources) -> Sequence[ConsumerRunner]:
    return [
        ConsumerRunner(
            group="journey.triggers",
            topics=TOPICS,
            handler=TriggerHandler(resources.sessions, resources.producer),
            settings=resources.settings,
            dlq_producer=resources.producer,
        )
    ]


SERVICE = ServiceSpec(name="journey", consumers=consumers)
