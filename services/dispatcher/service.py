"""Wiring of the dispatcher service: the sender consumer and its providers."""

from __future__ import annotations

from libs.runtime.service import ServiceSpec, one_consumer
from services.dispatcher.consumer import TOPICS, Sender
from services.dispatcher.providers import LogProvider, Provider

CHANNELS = ("push", "web_push", "sms", "email", "in_app", "inbox", "log")


def providers() -> dict[str, Provider]:
    """Channel → provider. Until the messaging issue adds FCM/APNs/SMS/SMTP adapters,
    every channel goes to the log provider, which records what would be sent."""
    log_provider = LogProvider()
    return dict.fromkeys(CHANNELS, log_provider)


SERVICE = ServiceSpec(
    name="dispatcher",
    consumers=one_consumer(
        "dispatcher.sender", TOPICS, lambda r: Sender(r.sessions, r.producer, providers())
    ),
)
