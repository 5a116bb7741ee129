"""Installs on "count after verification" trackers that were never verified within the
window (7 days) become ``unverified`` — never billed. Timed work (``libs.runtime.timed``),
because the absence of a verification is an event no topic carries: a pending install
falls due when its window has passed (``install_ts + VERIFICATION_WINDOW``, exclusive),
and the runner claims overdue installs of every app, oldest first, in batches that any
number of replicas share."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from libs.runtime.kafka import Producer
from libs.runtime.timed import TimedWork
from services.attribution import outcomes, store
from services.attribution.identity import restate

# The window is exclusive (its last moment is still pending): an install falls due one
# tick of Postgres' clock (a microsecond) after it.
_PAST = timedelta(microseconds=1)


class VerificationSweep(TimedWork[store.Install]):
    """Expires overdue pending installs: each claimed install is decided again at the
    claim's ``now`` (a verification committed meanwhile still verifies it) and restated;
    the statements are published before the commit (deterministic ids: a replayed batch
    republishes the same)."""

    name = "attribution.verification"
    batch_size = 500
    poll_interval = timedelta(seconds=60)

    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    async def claim(
        self, session: AsyncSession, *, now: datetime, limit: int
    ) -> Sequence[store.Install]:
        return await store.claim_overdue(
            session, before=now - outcomes.VERIFICATION_WINDOW, limit=limit
        )

    def due_at(self, item: store.Install) -> datetime:
        return item.install_ts + outcomes.VERIFICATION_WINDOW + _PAST

    async def handle(
        self, session: AsyncSession, items: Sequence[store.Install], *, now: datetime
    ) -> None:
        out = []
        for row in items:
            # A verification may have been committed while the install was being
            # decided (two replicas): look before expiring.
            verified_at = await store.verified_at(
                session, app_id=row.app_id, user_key=row.user_key, device_id=row.device_id
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

    async def next_due(self, session: AsyncSession, *, after: datetime) -> datetime | None:
        earliest = await store.earliest_pending(session, since=after - outcomes.VERIFICATION_WINDOW)
        return None if earliest is None else earliest + outcomes.VERIFICATION_WINDOW + _PAST
