"""The provider interface and the ``log`` provider.

A provider delivers one rendered message on one channel and answers with the
provider's message id, or raises ``ProviderError`` (permanent: the receipt says
failed) — transient transport errors propagate for the consumer runner to retry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher import store
from services.dispatcher.logic import Rendered


class ProviderError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Outgoing:
    app_id: str
    job_id: str
    user_key: str
    channel: str
    message: Rendered


class Provider(Protocol):
    name: str

    async def send(self, session: AsyncSession, outgoing: Outgoing) -> str: ...


class LogProvider:
    """Records the message to the ``dispatcher_outbox`` table, in the caller's
    transaction: the send and the ledger entry commit together. Used for every channel
    in local mode, and by tests and demos to see exactly what would have been sent."""

    name = "log"

    async def send(self, session: AsyncSession, outgoing: Outgoing) -> str:
        message_id = uuid.uuid5(uuid.NAMESPACE_URL, f"log:{outgoing.job_id}").hex
        await store.record_outbox(
            session,
            app_id=outgoing.app_id,
            job_id=outgoing.job_id,
            user_key=outgoing.user_key,
            channel=outgoing.channel,
            title=outgoing.message.title,
            body=outgoing.message.body,
            url=outgoing.message.url,
            data=outgoing.message.data,
            message_id=message_id,
        )
        return message_id
