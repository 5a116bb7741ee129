"""The ``dispatcher.sender`` consumer: SendJob in, DeliveryReceipt out.

Each job id is claimed once in the send ledger; a replayed job is skipped. Rendering
errors and unknown templates are permanent: the job's receipt says ``failed`` with the
reason. Receipts are published before the Postgres commit (a retry re-renders and
republishes the same receipt ids; the log provider's outbox is keyed by job id).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch
from libs.schemas import DeliveryReceipt, SendJob
from services.dispatcher import logic, store
from services.dispatcher.metrics import SENDS
from services.dispatcher.providers import Address, Message, Provider

TOPICS = ("send-jobs",)


class Sender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        providers: dict[str, Provider],
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._providers = providers

    async def __call__(self, batch: Batch) -> None:
        receipts: list[DeliveryReceipt] = []
        async with self._sessions() as session, session.begin():
            for record in batch.records:
                job = record.value
                assert isinstance(job, SendJob)
                receipt = await self._send(session, job)
                if receipt is not None:
                    receipts.append(receipt)
            await session.flush()
            await self._producer.publish_all(receipts)
        for receipt in receipts:
            SENDS.labels(receipt.channel, receipt.status).inc()

    async def _send(self, session: AsyncSession, job: SendJob) -> DeliveryReceipt | None:
        if not await store.claim(
            session,
            app_id=job.app_id,
            job_id=job.job_id,
            user_key=job.user_key,
            channel=job.channel,
        ):
            return None
        provider = self._providers.get(job.channel)
        status, message_id, error = "failed", None, None
        if job.expires_at is not None and datetime.now(UTC) >= job.expires_at:
            status, error = "suppressed", f"expired at {job.expires_at.isoformat()}"
        elif provider is None:
            error = f"no provider configured for channel {job.channel}"
        elif job.content is None:
            error = f"template {job.template_id} not found"
        else:
            context = {
                **job.context,
                "profile": await store.profile_context(
                    session, app_id=job.app_id, user_key=job.user_key
                ),
            }
            try:
                rendered = logic.render(job.content, context)
            except logic.RenderError as exc:
                error = str(exc)[:1024]
            else:
                outcome = await provider.send(
                    Message(
                        app_id=job.app_id,
                        job_id=job.job_id,
                        channel=job.channel,
                        title=rendered.title,
                        body=rendered.body,
                        url=rendered.url,
                        data=rendered.data,
                        subject=job.content.subject,
                        category=job.category,
                    ),
                    Address(kind="log", value=job.user_key),
                )
                status, message_id, error = (
                    outcome.status,
                    outcome.provider_message_id,
                    outcome.error,
                )
        await store.finish(
            session,
            app_id=job.app_id,
            job_id=job.job_id,
            status=status,
            provider=provider.name if provider else None,
            provider_message_id=message_id,
            error=error,
        )
        return DeliveryReceipt(
            app_id=job.app_id,
            receipt_id=logic.receipt_id(job.job_id, status),
            job_id=job.job_id,
            user_key=job.user_key,
            channel=job.channel,
            status=status,
            provider=provider.name if provider else "none",
            provider_message_id=message_id,
            error=error,
            ts=datetime.now(UTC),
            journey_id=job.journey_id,
        )
