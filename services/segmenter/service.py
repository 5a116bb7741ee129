"""Wiring of the segmenter service: the profile consumer."""

from __future__ import annotations

from collections.abc import Sequence

from libs.runtime.pipeline import ConsumerRunner
from libs.runtime.resources import Resources
from libs.runtime.service import ServiceSpec
from services.segmenter.consumer import TOPICS, ProfileUpdater


def consumers(resources: Resources) -> Sequence[ConsumerRunner]:
    return [
        ConsumerRunner(
            group="segmenter.profiles",
            topics=TOPICS,
            handler=ProfileUpdater(resources.sessions, resources.producer),
            settings=resources.settings,
            dlq_producer=resources.producer,
        )
    ]


SERVICE = ServiceSpec(name="segmenter", consumers=consumers)
