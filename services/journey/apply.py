"""The engine's edge: load what runs need, call ``logic.advance``, write the result.

Every consumer and runner of the service moves runs through ``Engine.move`` inside its
own transaction: it loads the runs' definitions (immutable versions, cached) and their
users' facts, advances each run by its stimuli in order, applies the journeys' limits,
writes runs, stats and tasks, and returns the records to publish — which the caller
publishes *before* committing (at-least-once; every id is deterministic, so a replay
publishes the same ids and consumers drop the duplicates).
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from libs.journeys.definition import (
    ConditionNode,
    DefinitionError,
    Journey,
    ScheduleTrigger,
    SendNode,
    WaitNode,
)
from libs.journeys.validate import parse
from libs.schemas import Event, SendJob
from libs.schemas.base import ANONYMOUS_PREFIX
from services.journey import limits, store
from services.journey.conditions import load_conditions
from services.journey.logic import (
    AttributeUpdate,
    Facts,
    Run,
    Step,
    Stimulus,
    WebhookCall,
    advance,
)
from services.journey.metrics import CAPPED, DEFERRED, RUNS_ENDED, STEPS
from services.journey.profiles import Condition, facts_of

log = logging.getLogger(__name__)

VersionKey = tuple[str, str, int]
# (session, app id, user keys, now) → a condition evaluator per user.
ConditionLoader = Callable[
    [AsyncSession, str, Sequence[str], datetime], Awaitable[Mapping[str, Condition]]
]


@dataclass
class Move:
    """A run and the stimuli to apply, in order. ``new``: the run is not stored yet (an
    entry): it is inserted, and its effects emitted only if this cause had not started
    it already."""

    run: Run
    stimuli: list[Stimulus]
    new: bool = False
    cause: str = ""


@dataclass
class Output:
    """What a transaction decided to publish."""

    jobs: list[SendJob] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    webhooks: int = 0

    def records(self) -> list[Any]:
        return [*self.jobs, *self.events]


class Engine:
    """Shared by the service's consumers and runners (one per process). Holds only an
    LRU of parsed journey versions, which never change once written."""

    def __init__(
        self,
        *,
        conditions: ConditionLoader = load_conditions,
        cache_size: int = 2048,
    ) -> None:
        self._conditions = conditions
        self._cache: OrderedDict[VersionKey, Journey | None] = OrderedDict()
        self._cache_size = cache_size

    async def journeys(
        self, session: AsyncSession, keys: Sequence[VersionKey]
    ) -> dict[VersionKey, Journey | None]:
        """Parsed versions; None for one that is missing or no longer parses (logged)."""
        found: dict[VersionKey, Journey | None] = {}
        missing = []
        for key in set(keys):
            if key in self._cache:
                self._cache.move_to_end(key)
                found[key] = self._cache[key]
            else:
                missing.append(key)
        rows = await store.versions(session, keys=missing)
        for key in missing:
            row = rows.get(key)
            journey = None
            if row is not None:
                try:
                    journey = parse(row.trigger, row.definition)
                except DefinitionError as exc:
                    log.error(
                        "stored journey version invalid", extra={"key": key, "error": str(exc)}
                    )
            found[key] = journey
            self._cache[key] = journey
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return found

    async def facts(
        self,
        session: AsyncSession,
        app_id: str,
        user_keys: Sequence[str],
        now: datetime,
        *,
        conditions: bool,
    ) -> dict[str, Facts]:
        profiles = await store.profiles(session, app_id=app_id, user_keys=user_keys)
        evaluators: Mapping[str, Condition] = {}
        if conditions:
            evaluators = await self._conditions(session, app_id, user_keys, now)
        never: Condition = lambda _n, _r: False  # noqa: E731
        return {u: facts_of(profiles.get(u), now, evaluators.get(u, never)) for u in user_keys}

    async def move(self, session: AsyncSession, moves: Sequence[Move], now: datetime) -> Output:
        """Advance ``moves`` and write everything; returns what to publish. Runs whose
        journey version is missing are left as they are."""
        out = Output()
        if not moves:
            return out
        journeys = await self.journeys(
            session, [(m.run.app_id, m.run.journey_id, m.run.version) for m in moves]
        )
        by_app: dict[str, list[Move]] = defaultdict(list)
        for m in moves:
            by_app[m.run.app_id].append(m)
        stats: Counter[tuple[str, str, str, str]] = Counter()
        capped: Counter[tuple[str, str, str, str]] = Counter()
        for app_id, app_moves in by_app.items():
            users = sorted({m.run.user_key for m in app_moves})
            used = [
                j
                for m in app_moves
                if (j := journeys.get((app_id, m.run.journey_id, m.run.version))) is not None
            ]
            needs_conditions = any(
                isinstance(n, ConditionNode) for j in used for n in j.definition.nodes
            )
            if any(needs_profile(j) for j in used):
                facts = await self.facts(session, app_id, users, now, conditions=needs_conditions)
            else:
                facts = {u: NO_FACTS for u in users}
            new_runs: list[tuple[Run, str]] = []
            results: list[tuple[Move, Run, list[Step]]] = []
            for m in app_moves:
                journey = journeys.get((app_id, m.run.journey_id, m.run.version))
                if journey is None:
                    continue
                run, steps = m.run, []
                for stimulus in m.stimuli:
                    step = advance(run, journey.definition, stimulus, now, facts[run.user_key])
                    steps.append(step)
                    run = step.run
                results.append((m, run, steps))
                if m.new:
                    new_runs.append((run, m.cause))
            inserted = await store.insert_runs(session, runs=new_runs)
            changed = []
            jobs_by_journey: dict[str, list[SendJob]] = defaultdict(list)
            for m, run, steps in results:
                if m.new and run.run_id not in inserted:
                    continue  # this cause already started the run: a replay
                if not m.new and run == m.run:
                    continue
                if not m.new:
                    changed.append(run)
                out.runs.append(run)
                for step in steps:
                    for node_id in step.entered:
                        stats[(app_id, run.journey_id, node_id, step.run.variant or "")] += 1
                    jobs_by_journey[run.journey_id].extend(step.jobs)
                    out.events.extend(attribute_event(run, u, now) for u in step.updates)
                    await self._webhooks(session, run, step.webhooks, now)
                    out.webhooks += len(step.webhooks)
                    STEPS.inc(len(step.entered))
                if run.ended:
                    RUNS_ENDED.labels(run.status).inc()
            await store.save_runs(session, runs=changed)
            for journey_id, jobs in sorted(jobs_by_journey.items()):
                version = next(r.version for r in out.runs if r.journey_id == journey_id)
                journey = journeys[(app_id, journey_id, version)]
                assert journey is not None
                kept = await self._limit(session, app_id, journey_id, journey, jobs, now, capped)
                out.jobs.extend(kept)
        merged = Counter(stats)
        counts = {k: (merged.get(k, 0), capped.get(k, 0)) for k in set(merged) | set(capped)}
        await store.add_node_stats(session, counts=counts)
        return out

    async def _limit(
        self,
        session: AsyncSession,
        app_id: str,
        journey_id: str,
        journey: Journey,
        jobs: list[SendJob],
        now: datetime,
        capped: Counter[tuple[str, str, str, str]],
    ) -> list[SendJob]:
        """The jobs to publish now; deferred ones become tasks, capped ones are counted."""
        lim = journey.definition.limits
        trigger = journey.trigger
        if isinstance(trigger, ScheduleTrigger):
            # A broadcast: its jobs say so, and its throttle is a send rate.
            jobs = [j.model_copy(update={"broadcast_id": journey_id}) for j in jobs]
            if trigger.per_second is not None:
                rate = min(trigger.per_second, lim.per_second or trigger.per_second)
                lim = lim.model_copy(update={"per_second": rate})
        if lim.daily_cap is None and lim.total_cap is None and lim.per_second is None:
            return jobs
        day = now.date()
        today, total, slot = await store.sends_so_far(
            session, app_id=app_id, journey_id=journey_id, day=day
        )
        decisions, budget = limits.decide(lim, limits.Budget(today, total, slot), len(jobs), now)
        kept, deferred = [], []
        for job, decision in zip(jobs, decisions, strict=True):
            if decision.action == "send":
                kept.append(job)
            elif decision.action == "defer":
                deferred.append(
                    {
                        "app_id": app_id,
                        "task_id": job.job_id,
                        "kind": "send",
                        "user_key": job.user_key,
                        "journey_id": journey_id,
                        "payload": job.model_dump(mode="json"),
                        "due_at": decision.at,
                        "attempts": 0,
                    }
                )
                DEFERRED.inc()
            else:
                capped[(app_id, journey_id, job.step_id or "", job.variant_id or "")] += 1
                CAPPED.inc()
        await store.add_tasks(session, tasks=deferred)
        await store.count_sends(
            session,
            app_id=app_id,
            journey_id=journey_id,
            day=day,
            sent=budget.today - today,
            next_slot=budget.next_slot,
        )
        return kept

    async def _webhooks(
        self, session: AsyncSession, run: Run, calls: Sequence[WebhookCall], now: datetime
    ) -> None:
        await store.add_tasks(
            session,
            tasks=[
                {
                    "app_id": run.app_id,
                    "task_id": call.effect_id,
                    "kind": "webhook",
                    "user_key": run.user_key,
                    "journey_id": run.journey_id,
                    "payload": webhook_payload(run, call),
                    "due_at": now,
                    "attempts": 0,
                }
                for call in calls
            ],
        )


NO_FACTS = Facts()


def needs_profile(journey: Journey) -> bool:
    """Whether walking ``journey`` can ask about the profile: a local-time or profile-date
    wait, a "best" channel, a condition. Others skip the profile read (the hot path of
    plain waits and sends)."""
    for node in journey.definition.nodes:
        if isinstance(node, ConditionNode):
            return True
        if isinstance(node, WaitNode) and node.duration is None:
            return True
        if isinstance(node, SendNode) and node.channel == "best":
            return True
    return False


def webhook_payload(run: Run, call: WebhookCall) -> dict[str, Any]:
    """The stored call: what to send and what the body says of the run."""
    body = dict(call.body) if call.body is not None else {}
    body.setdefault("journey_id", run.journey_id)
    body.setdefault("run_id", run.run_id)
    body.setdefault("user_key", run.user_key)
    body.setdefault("node_id", call.node_id)
    body.setdefault("trigger", dict(run.trigger.get("props") or {}))
    return {
        "url": call.url,
        "method": call.method,
        "headers": dict(call.headers),
        "body": body,
        "timeout_s": call.timeout_s,
        "retries": call.retries,
    }


def attribute_event(run: Run, update: AttributeUpdate, now: datetime) -> Event:
    """The ``$attributes`` event an update node publishes (``source="journey"``): keyed
    like the user's own events, so the segmenter — the profiles' one writer — applies it
    in order with them."""
    props: dict[str, Any] = {}
    if update.set:
        props["set"] = dict(update.set)
    if update.increment:
        props["increment"] = dict(update.increment)
    if update.unset:
        props["unset"] = list(update.unset)
    anonymous = run.user_key.startswith(ANONYMOUS_PREFIX)
    return Event(
        app_id=run.app_id,
        event_id=update.effect_id,
        name="$attributes",
        device_id=run.user_key[len(ANONYMOUS_PREFIX) :] if anonymous else None,
        user_id=None if anonymous else run.user_key,
        ts=now,
        received_at=now,
        source="journey",
        props=props,
    )
