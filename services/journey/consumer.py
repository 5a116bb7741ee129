"""The ``journey.triggers`` consumer: SegmentChanged in, SendJob out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch
from libs.schemas import SegmentChanged, SendJob
from libs.schemas.journeys import JourneyDefinition, SegmentEntered
from services.journey import logic, store
from services.journey.metrics import RUNS, RUNS_CARRIED

log = logging.getLogger(__name__)

TOPICS = ("segment-changes",)


class TriggerHandler:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], producer: Producer) -> None:
        self._sessions = sessions
        self._producer = producer

    async def __call__(self, batch: Batch) -> None:
        now = datetime.now(UTC)
        jobs: list[SendJob] = []
        async with self._sessions() as session, session.begin():
            configs: dict[str, list[logic.JourneyConfig]] = {}
            for record in batch.records:
                change = record.value
                assert isinstance(change, SegmentChanged)
                if change.app_id not in configs:
                    configs[change.app_id] = await self._configs(session, change.app_id)
                triggered = logic.triggered(configs[change.app_id], change)
                if triggered and change.merged_from is not None:
                    # A login merged the device's anonymous profile, already a member:
                    # what it went through (a welcome) does not start again for the user.
                    done = await store.journeys_run_for(
                        session, app_id=change.app_id, user_key=change.merged_from
                    )
                    RUNS_CARRIED.inc(sum(1 for j in triggered if j.id in done))
                    triggered = [j for j in triggered if j.id not in done]
                for journey in triggered:
                    run, run_jobs = logic.start(journey, change, change.ts)
                    await store.start_run(
                        session,
                        app_id=change.app_id,
                        run_id=run,
                        journey_id=journey.id,
                        user_key=change.user_key,
                        change_id=change.change_id,
                        at=now,
                    )
                    jobs.extend(run_jobs)
                    RUNS.inc()
            await session.flush()
            await self._producer.publish_all(jobs)

    async def _configs(self, session: AsyncSession, app_id: str) -> list[logic.JourneyConfig]:
        configs = []
        for row in await store.active_journeys(session, app_id=app_id):
            try:
                configs.append(
                    logic.JourneyConfig(
                        row.id,
                        SegmentEntered.model_validate(row.trigger),
                        JourneyDefinition.model_validate(row.definition),
                    )
                )
            except ValidationError as exc:
                log.error(
                    "journey definition invalid", extra={"journey": row.id, "error": str(exc)[:500]}
                )
        return configs
