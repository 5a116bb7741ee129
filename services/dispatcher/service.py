"""Wiring of the dispatcher service: the sender consumer, its providers, and the admin
endpoints of provider credentials."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.resources import Resources
from libs.runtime.service import ServiceSpec, one_consumer
from libs.runtime.settings import DEV_SECRETS_KEY
from services.dispatcher import credentials_api
from services.dispatcher.consumer import TOPICS, Sender
from services.dispatcher.credentials import Keyring
from services.dispatcher.providers import Provider, ProviderRegistry
from services.dispatcher.providers.log import LogProvider

log = logging.getLogger(__name__)

CHANNELS = ("push", "web_push", "sms", "email", "in_app", "inbox", "log")


def providers(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Provider]:
    """Channel → provider of the sender as it stands: every channel goes to the log
    provider (the messaging core routes through ``registry`` instead)."""
    log_provider = LogProvider(sessions)
    return dict.fromkeys(CHANNELS, log_provider)


def registry(resources: Resources) -> ProviderRegistry:
    """The per-app provider registry of this process (the caller closes it)."""
    return ProviderRegistry(
        sessions=resources.sessions,
        keyring=Keyring.from_settings(resources.settings),
        settings=resources.settings,
    )


async def check_secrets_key(resources: Resources) -> None:
    """Refuse to start without a usable master key of provider credentials (the
    development placeholder is refused outside development)."""
    keyring = Keyring.from_settings(resources.settings)
    if resources.settings.dispatcher_secrets_key.get_secret_value() == DEV_SECRETS_KEY:
        log.warning("provider credentials are sealed with the development key %s", keyring.key_id)


SERVICE = ServiceSpec(
    name="dispatcher",
    routers=lambda: [credentials_api.router],
    consumers=one_consumer(
        "dispatcher.sender", TOPICS, lambda r: Sender(r.sessions, r.producer, providers(r.sessions))
    ),
    on_start=check_secrets_key,
)
