"""Wiring of the dispatcher service: the sender consumer and its providers."""

from __future__ import annotations

from collections.abc import Sequence

from libs.runtime.pipeline import ConsumerRunner
from libs.runtime.resources import Resources
from libs.runtime.service import ServiceSpec
from services.dispatcher.consumer import TOPICS, Sender
from services.dispatcher.providers import LogProvider, Provider

CHANNELS = ("push", "web_push", "sms", "email", "in_app", "inbox", "log")


def providers() -> dict[str, Provider]:
    """Channel → provider. Until the messaging issue adds FCM/APNs/SMS/SMTP adapters,
    every channel goes to the log provider, which records what would be sent."""
    log_provider = LogProvider()
    return dict.fromkeys(CHANNELS, log_provider)


def consumers(resources: Resources) -> Sequence[ConsumerRunner]:
    return [
        ConsumerRunner(
            group="dispatcher.sender",
            topics=TOPICS,
            handler=Sender(resources.sessions, resources.producer, providers()),
            settings=resources.settings,
            dlq_producer=resources.producer,
        )
    ]


SERVICE = ServiceSpec(name="dispatcher", consumers=consumers)
