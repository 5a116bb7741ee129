"""The ``log`` provider: records what would have been sent, in ``dispatcher_outbox``.

Used for the ``log`` channel, and for any channel of an app without credentials for it
when ``HODHOD_DISPATCHER_LOG_FALLBACK`` is on (development and tests). It writes in its
own short transaction (a provider never shares the caller's), keyed by job id, so a
resend records nothing new.
"""

from __future__ import annotations

import uuid

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatcher import store
from services.dispatcher.providers.base import UNAVAILABLE, Address, Message, Outcome, failed, sent


class LogProvider:
    name = "log"

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def send(self, message: Message, address: Address) -> Outcome:
        """Record ``message``; the outbox's ``user_key`` is the address's value for a
        ``log`` address (the user key), else ``<kind>:<value>`` (where it would have
        gone). A database failure is a transient failure, like a provider's 5xx."""
        message_id = uuid.uuid5(uuid.NAMESPACE_URL, f"log:{message.job_id}").hex
        where = address.value if address.kind == "log" else f"{address.kind}:{address.value}"
        try:
            await self._record(message, where, message_id)
        except (DBAPIError, OSError) as exc:
            return failed(
                self.name,
                UNAVAILABLE,
                f"outbox write failed ({type(exc).__name__})",
                transient=True,
            )
        return sent(self.name, message_id)

    async def _record(self, message: Message, where: str, message_id: str) -> None:
        async with self._sessions() as session, session.begin():
            await store.record_outbox(
                session,
                app_id=message.app_id,
                job_id=message.job_id,
                user_key=where[:200],
                channel=message.channel,
                title=message.title,
                body=message.body,
                url=message.url,
                data=message.data,
                message_id=message_id,
            )

    async def aclose(self) -> None:
        return None
