"""Wiring of the journey service: three consumers (segment-changes, events,
config-changes), the timed work (run timers, tasks, schedules) and the admin routes it
serves (dry runs, stats)."""

from __future__ import annotations

from collections.abc import Sequence

from libs.runtime.pipeline import ConsumerRunner
from libs.runtime.resources import Resources
from libs.runtime.service import ServiceSpec
from services.journey.api import router
from services.journey.apply import Engine
from services.journey.consumer import CONFIG_TOPICS, TOPICS, ConfigHandler, TriggerHandler
from services.journey.events import TOPICS as EVENT_TOPICS
from services.journey.events import EventHandler


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
        runner("journey.triggers", TOPICS, TriggerHandler(r.sessions, r.producer, r.clock, engine)),
        runner(
            "journey.events", EVENT_TOPICS, EventHandler(r.sessions, r.producer, r.clock, engine)
        ),
        runner("journey.config", CONFIG_TOPICS, ConfigHandler(r.sessions, r.clock)),
    ]


SERVICE = ServiceSpec(name="journey", routers=lambda: [router], consumers=consumers)
