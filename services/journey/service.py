"""Wiring of the journey service: three consumers (segment-changes, events,
config-changes), the timed work (run timers, tasks, schedules) and the admin routes it
serves (dry runs, stats)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from libs.runtime.pipeline import ConsumerRunner
from libs.runtime.resources import Resources
from libs.runtime.service import ServiceSpec, timed_runner
from libs.runtime.timed import TimedRunner
from services.journey.api import router
from services.journey.apply import Engine
from services.journey.consumer import CONFIG_TOPICS, TOPICS, ConfigHandler, TriggerHandler
from services.journey.events import TOPICS as EVENT_TOPICS
from services.journey.events import EventHandler
from services.journey.wakeups import RunTimers, Schedules, Tasks


def timed(resources: Resources) -> Sequence[TimedRunner[Any]]:
    engine = Engine()
    settings = resources.settings
    return [
        timed_runner(
            RunTimers(engine, resources.producer, batch_size=settings.journey_timer_batch),
            resources,
        ),
        timed_runner(
            Tasks(
                resources.producer,
                resources.http,
                allow_private=settings.journey_webhook_allow_private,
            ),
            resources,
        ),
        timed_runner(
            Schedules(engine, resources.producer, page=settings.journey_broadcast_page),
            resources,
        ),
    ]


class _Waking:
    """A handler that, after its batch committed, wakes the journey's timed work: a run
    or schedule it left due soon (a zero wait, a deferral, a broadcast just activated)
    need not wait for the next poll."""

    def __init__(self, handler: Any, resources: Resources) -> None:
        self._handler = handler
        self._resources = resources

    async def __call__(self, batch: Any) -> None:
        await self._handler(batch)
        for name in (RunTimers.name, Tasks.name, Schedules.name):
            runner = self._resources.timed.get(name)
            if runner is not None:
                runner.wake()


def consumers(resources: Resources) -> Sequence[ConsumerRunner]:
    engine = Engine()

    def runner(group: str, topics: Sequence[str], handler: object) -> ConsumerRunner:
        return ConsumerRunner(
            group=group,
            topics=topics,
            handler=handler,  # type: ignore[arg-type]
            settings=resources.settings,
            dlq_producer=resources.producer,
        )

    r = resources
    return [
        runner(
            "journey.triggers",
            TOPICS,
            _Waking(TriggerHandler(r.sessions, r.producer, r.clock, engine), r),
        ),
        runner(
            "journey.events",
            EVENT_TOPICS,
            _Waking(EventHandler(r.sessions, r.producer, r.clock, engine), r),
        ),
        runner("journey.config", CONFIG_TOPICS, _Waking(ConfigHandler(r.sessions, r.clock), r)),
    ]


SERVICE = ServiceSpec(name="journey", routers=lambda: [router], consumers=consumers, timed=timed)
