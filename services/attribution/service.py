"""Wiring of the attribution service: the matcher consumer."""

from __future__ import annotations

from collections.abc import Sequence

from libs.runtime.pipeline import ConsumerRunner
from libs.runtime.resources import Resources
from libs.runtime.service import ServiceSpec
from services.attribution.consumer import TOPICS, Matcher


def consumers(resources: Resources) -> Sequence[ConsumerRunner]:
    return [
        ConsumerRunner(
            group="attribution.matcher",
            topics=TOPICS,
            handler=Matcher(resources.sessions, resources.producer),
            settings=resources.settings,
            dlq_producer=resources.producer,
        )
    ]


SERVICE = ServiceSpec(name="attribution", consumers=consumers)
