"""Installs on "count after verification" trackers that were never verified within the
window (7 days) become ``unverified`` — never billed. A periodic sweep, because the
absence of a verification is an event no topic carries."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from services.attribution import outcomes, store
from services.attribution.identity import restate

log = logging.getLogger(__name__)

INTERVAL_S = 60.0


class VerificationSweep:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._interval_s = interval_s

    async def run(self) -> None:
        """Sweep forever (cancelled on shutdown); a failed sweep is retried next time."""
        while True:
            try:
                await self.sweep(datetime.now(UTC))
            except Exception:
                log.exception("verification sweep failed")
            await asyncio.sleep(self._interval_s)

    async def sweep(self, now: datetime) -> int:
        """Expire what is overdue at ``now``; returns how many installs changed."""
        async with self._sessions() as session:
            # The tenant list: the one query not scoped by an app; all that follow are.
            app_ids = await store.apps_with_pending(session)
        changed = 0
        for app_id in sorted(app_ids):
            async with self._sessions() as session, session.begin():
                out = []
                for row in await store.pending_installs(
                    session, app_id=app_id, older_than=now - outcomes.VERIFICATION_WINDOW
                ):
                    # A verification may have been committed while the install was being
                    # decided (two replicas): look before expiring.
                    verified_at = await store.verified_at(
                        session, app_id=app_id, user_key=row.user_key, device_id=row.device_id
                    )
                    status = outcomes.verification_status(
                        mode="on_verification",
                        install_ts=row.install_ts,
                        verified_at=verified_at,
                        now=now,
                        current=row.status,
                    )
                    if status != row.status:
                        out.append(await restate(session, row, status, now))
                await session.flush()
                await self._producer.publish_all(out)
                changed += len(out)
        return changed
