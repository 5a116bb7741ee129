"""The consumer runner against the real broker: retries without committing, commits
after the effect, and a restarted group resumes after the last committed batch."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from libs.runtime.errors import TransientError
from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch, ConsumerRunner
from libs.runtime.settings import KafkaSettings
from libs.schemas import UserVerified
from tests.conftest import eventually

pytestmark = pytest.mark.integration


def verification(app_id: str, n: int) -> UserVerified:
    return UserVerified(
        app_id=app_id, verification_id=f"v{n}", user_id=f"u{n}", ts=datetime.now(UTC), method="otp"
    )


async def test_retry_then_commit_then_resume(settings: KafkaSettings) -> None:
    app_id = f"app_{uuid.uuid4().hex[:10]}"
    group = f"test.runner.{uuid.uuid4().hex[:8]}"
    producer = Producer(settings.kafka_bootstrap)
    await producer.start()
    seen: list[str] = []
    attempts = {"n": 0}

    async def flaky(batch: Batch) -> None:
        mine = [r.value for r in batch.records if r.value.app_id == app_id]
        if mine and attempts["n"] < 2:
            attempts["n"] += 1
            raise TransientError("store unavailable")
        seen.extend(v.verification_id for v in mine if isinstance(v, UserVerified))

    try:
        await producer.publish_all([verification(app_id, n) for n in range(5)])
        first = ConsumerRunner(
            group=group,
            topics=["verifications"],
            handler=flaky,
            settings=settings,
            dlq_producer=producer,
        )
        task = asyncio.create_task(first.run())

        async def all_seen() -> bool:
            return len(seen) >= 5

        await eventually(all_seen, within=60)
        first.stop()
        await asyncio.wait_for(task, 30)
        assert attempts["n"] == 2
        assert sorted(seen) == [f"v{n}" for n in range(5)]

        # The same group restarted sees only what was produced after its commit.
        await producer.publish_all([verification(app_id, n) for n in range(5, 7)])
        later: list[str] = []

        async def record(batch: Batch) -> None:
            later.extend(
                r.value.verification_id
                for r in batch.records  # type: ignore[union-attr]
                if r.value.app_id == app_id
            )

        second = ConsumerRunner(
            group=group,
            topics=["verifications"],
            handler=record,
            settings=settings,
            dlq_producer=producer,
        )
        task = asyncio.create_task(second.run())

        async def new_ones() -> bool:
            return len(later) >= 2

        await eventually(new_ones, within=60)
        await asyncio.sleep(0.5)
        second.stop()
        await asyncio.wait_for(task, 30)
        assert sorted(later) == ["v5", "v6"]
    finally:
        await producer.stop()
