"""How a service describes itself, and how one or many are composed into a process.

Each ``services/<name>/service.py`` exports ``SERVICE = ServiceSpec(...)``. The launcher
composes any subset into one FastAPI app (all routes on one port) whose lifespan opens
the shared resources once and runs every consumer and timed-work runner as a task. A
consumer or runner that crashes stops the whole process: a supervisor (Kubernetes,
compose, the developer) restarts it. On shutdown both finish the batch in hand.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI

from libs.runtime import postgres
from libs.runtime.clock import Clock
from libs.runtime.http import FastRoute, create_app
from libs.runtime.pipeline import BatchPolicy, ConsumerRunner, Handler
from libs.runtime.resources import Resources, open_resources
from libs.runtime.settings import PlatformSettings
from libs.runtime.tenancy import KeyResolver
from libs.runtime.timed import TimedRunner, TimedWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    routers: Callable[[], Sequence[APIRouter]] = lambda: ()
    # GET routes answered ahead of routing and middleware (libs.runtime.http.FastRoute).
    fast_routes: Callable[[], Sequence[FastRoute]] = lambda: ()
    consumers: Callable[[Resources], Sequence[ConsumerRunner]] = lambda _: ()
    # Timed work (libs.runtime.timed): built before the consumers, so that a consumer
    # can find its runner in ``Resources.timed`` to ``wake()`` it.
    timed: Callable[[Resources], Sequence[TimedRunner[Any]]] = lambda _: ()
    # Long-running loops that are neither (cancelled on shutdown).
    tasks: Callable[[Resources], Sequence[Coroutine[Any, Any, None]]] = lambda _: ()
    needs_clickhouse: bool = False
    on_start: Callable[[Resources], Coroutine[Any, Any, None]] | None = None


def one_consumer(
    group: str,
    topics: Sequence[str],
    handler: Callable[[Resources], Handler],
    policy: BatchPolicy | None = None,
    *,
    per_partition: bool = False,
) -> Callable[[Resources], Sequence[ConsumerRunner]]:
    """The ``consumers`` of a service that runs one group: ``handler`` builds the batch
    handler from the process's resources; ``policy`` says when a batch is complete;
    ``per_partition`` handles each partition's batches on their own, partitions
    concurrently (``ConsumerRunner``; the handler must be replica-safe)."""

    def build(resources: Resources) -> Sequence[ConsumerRunner]:
        return [
            ConsumerRunner(
                group=group,
                topics=topics,
                handler=handler(resources),
                settings=resources.settings,
                dlq_producer=resources.producer,
                policy=policy,
                per_partition=per_partition,
            )
        ]

    return build


def timed_runner(work: TimedWork[Any], resources: Resources) -> TimedRunner[Any]:
    """A runner of ``work`` on the process's sessions and clock, retrying transient
    failures for ``HODHOD_TIMED_RETRY_BUDGET_S``."""
    return TimedRunner(
        work,
        sessions=resources.sessions,
        clock=resources.clock,
        retry_budget_s=resources.settings.timed_retry_budget_s,
    )


@dataclass
class Running:
    """What a composed process runs; exposed as ``app.state.running`` for tests."""

    consumers: list[ConsumerRunner] = field(default_factory=list)
    timed: list[TimedRunner[Any]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def compose(
    specs: Sequence[ServiceSpec],
    settings: PlatformSettings,
    *,
    on_crash: Callable[[asyncio.Task[None]], None] | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """One app for ``specs``: their routers, probes, consumers, timed work and background
    tasks.

    ``on_crash`` is called with a consumer's or timed runner's task that raised; the
    default stops the process with SIGTERM so that uvicorn shuts down cleanly. ``clock``
    is the process's clock (``Resources.clock``); tests pass a ``ManualClock``.
    """
    crash_callback = on_crash or _crash_on_failure
    with_clickhouse = any(s.needs_clickhouse for s in specs)
    names = "+".join(s.name for s in specs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(
            settings, with_clickhouse=with_clickhouse, client_id=f"hodhod-{names}", clock=clock
        ) as resources:
            app.state.resources = resources
            app.state.key_resolver = KeyResolver(resources.sessions)
            running = Running()
            app.state.running = running
            for spec in specs:
                if spec.on_start is not None:
                    await spec.on_start(resources)
            for spec in specs:
                for timed in spec.timed(resources):
                    if timed.name in resources.timed:
                        raise ValueError(f"two timed runners named {timed.name!r}")
                    resources.timed[timed.name] = timed
                    running.timed.append(timed)
            for spec in specs:
                running.consumers.extend(spec.consumers(resources))
                for coro in spec.tasks(resources):
                    running.tasks.append(asyncio.create_task(coro))
            app.state.readiness.update(_readiness(resources, running))
            # Consumers and timed runners finish the batch in hand on shutdown; the other
            # loops are cancelled.
            drained: list[asyncio.Task[None]] = []
            runs = [(r.group, r.run) for r in running.consumers]
            runs += [(f"timed:{r.name}", r.run) for r in running.timed]
            for name, run in runs:
                task = asyncio.create_task(run(), name=name)
                task.add_done_callback(
                    lambda t: None if t.cancelled() or t.exception() is None else crash_callback(t)
                )
                drained.append(task)
            running.tasks.extend(drained)
            tune_gc()
            try:
                yield
            finally:
                for runner in running.consumers:
                    runner.stop()
                for timed in running.timed:
                    timed.stop()
                for task in running.tasks:
                    if task not in drained:
                        task.cancel()
                await asyncio.gather(*running.tasks, return_exceptions=True)

    routers = [r for spec in specs for r in spec.routers()]
    return create_app(
        title=f"hodhod {names}",
        routers=routers,
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        fast_routes=[r for spec in specs for r in spec.fast_routes()],
    )


GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Process-level collector tuning for services that decode many short-lived objects.

    Everything built at start-up lives as long as the process, so it is frozen out of the
    collector's scans; and a consumer batch holds ~500 decoded models until its commit,
    which under the default gen-0 threshold (700) triggers a collection every ~30
    records. Measured on the runner (bench/kafka_kit.py): +25% records/s.
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def _readiness(
    resources: Resources, running: Running
) -> dict[str, Callable[[], Coroutine[Any, Any, bool]]]:
    async def consumers_joined() -> bool:
        # Until every group has its partitions, records wait (Tansu: a few seconds).
        return all(runner.assigned.is_set() for runner in running.consumers)

    checks: dict[str, Callable[[], Coroutine[Any, Any, bool]]] = {
        "postgres": lambda: postgres.ping(resources.engine),
        "kafka": resources.producer.ping,
    }

    async def timed_started() -> bool:
        # Until each runner's first round has completed (its store answered).
        return all(runner.ready.is_set() for runner in running.timed)

    if running.consumers:
        checks["consumers"] = consumers_joined
    if running.timed:
        checks["timed"] = timed_started
    if resources.clickhouse is not None:
        checks["clickhouse"] = resources.clickhouse.ping
    return checks


def _crash_on_failure(task: asyncio.Task[None]) -> None:
    log.critical("%s crashed; stopping the process", task.get_name(), exc_info=task.exception())
    # Let uvicorn shut down cleanly (SIGTERM) rather than leave a half-running process.
    os.kill(os.getpid(), signal.SIGTERM)
