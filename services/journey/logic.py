"""The journey engine: ``advance(run, definition, stimulus, now, facts)``. Pure.

A run is one user's pass through one version of a journey. It moves only when a
stimulus reaches it — its entry, its timer, or one of the user's events — and then walks
the graph until it must wait (a ``wait``, a ``wait_for_event``, a holdout window) or
ends (an ``exit``, a node with no next, the goal). What the walk emits is returned as
values: send jobs, attribute updates, webhook calls, and the node counts for stats.

Ids are deterministic: a send job is ``<run>:<node>:<visit>`` (the node's visit number
in this run), as are attribute updates and webhook calls, so a replayed stimulus — which
the edge can only replay from the same stored run — emits the same ids, and consumers
drop the duplicates. A run never visits a node twice in one walk (cycles pass through
waits, ``libs.journeys.validate``), and the walk is bounded anyway by ``MAX_STEPS``.

Variants: a split picks a variant by a hash of (run, node), so the choice is stable and
even; ``holdout`` runs receive nothing until the goal window ends and count as the
control group.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from libs.journeys.definition import (
    BEST_ORDER,
    HOLDOUT,
    Channel,
    ConditionNode,
    Definition,
    ExitNode,
    Goal,
    PropFilter,
    SendNode,
    SplitNode,
    UpdateAttributeNode,
    WaitForEventNode,
    WaitNode,
    WebhookNode,
)
from libs.rules.evaluation import match_attribute
from libs.rules.language import AttributeCond
from libs.schemas import SendJob
from services.journey import timing

MAX_STEPS = 200
RUN_NS = uuid.UUID("0b7e3c5a-8f9d-4a8e-b1f2-6d1c9e2a4b30")

Status = Literal["waiting", "completed", "exited", "converted"]
ENDED: frozenset[str] = frozenset({"completed", "exited", "converted"})


@dataclass(frozen=True, slots=True)
class Run:
    """One user's run, as stored. ``node`` is where it waits (None before its first
    step: a scheduled entry); ``visits`` counts each node's entries (the attempt of ids);
    ``trigger`` is the trigger event's name, id and properties (``{}`` otherwise)."""

    app_id: str
    run_id: str
    journey_id: str
    version: int
    user_key: str
    status: Status
    node: str | None
    entered_at: datetime
    wake_at: datetime | None = None
    waiting_for: str | None = None
    variant: str | None = None
    trigger: Mapping[str, Any] = field(default_factory=dict)
    visits: Mapping[str, int] = field(default_factory=dict)
    exit_reason: str | None = None
    ended_at: datetime | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED


# --- stimuli ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enter:
    """The run was just created: walk from ``start``."""


@dataclass(frozen=True, slots=True)
class Wake:
    """The run's timer is due (the edge claimed it at ``now``)."""


@dataclass(frozen=True, slots=True)
class EventSeen:
    """One of the user's events."""

    name: str
    event_id: str
    ts: datetime
    props: Mapping[str, Any] = field(default_factory=dict)


Stimulus = Enter | Wake | EventSeen


@dataclass(frozen=True)
class Facts:
    """What the walk may ask about the user now. ``condition(node_id, rule)`` evaluates a
    condition node's segment rule on the current profile (the edge binds it to the
    profile it loaded); ``reachable`` lists the channels the user can be reached on."""

    timezone: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    first_seen: datetime | None = None
    reachable: frozenset[str] = frozenset()
    condition: Callable[[str, Mapping[str, Any]], bool] = lambda _node, _rule: False


# --- effects ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttributeUpdate:
    """Write profile attributes; ``effect_id`` is the event id the edge publishes."""

    effect_id: str
    set: Mapping[str, Any]
    increment: Mapping[str, float]
    unset: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WebhookCall:
    effect_id: str
    node_id: str
    url: str
    method: str
    headers: Mapping[str, str]
    body: Mapping[str, Any] | None
    timeout_s: float
    retries: int


@dataclass(frozen=True, slots=True)
class Step:
    """What ``advance`` decided. ``entered``: the nodes the walk entered, in order (for
    per-node stats); ``converted``: the goal was met by this stimulus."""

    run: Run
    jobs: tuple[SendJob, ...] = ()
    updates: tuple[AttributeUpdate, ...] = ()
    webhooks: tuple[WebhookCall, ...] = ()
    entered: tuple[str, ...] = ()
    converted: bool = False

    @property
    def next_wake(self) -> datetime | None:
        return None if self.run.ended else self.run.wake_at


def advance(
    run: Run, definition: Definition, stimulus: Stimulus, now: datetime, facts: Facts
) -> Step:
    """Move ``run`` by one stimulus. Deterministic; never raises for a valid definition.

    An ended run does not move. A ``Wake`` before the run's ``wake_at`` (a timer claimed
    early, or moved since) changes nothing. An event moves the run only when it meets the
    goal (within its window) or the ``wait_for_event`` the run waits at; other events
    leave it as it was.
    """
    if run.ended:
        return Step(run)
    if isinstance(stimulus, EventSeen):
        if definition.goal is not None and goal_met(definition.goal, run, stimulus):
            ended = _end(run, "converted", "goal", now)
            return Step(ended, converted=True)
        if run.node is None or run.status != "waiting" or run.variant == HOLDOUT:
            return Step(run)
        node = definition.node(run.node)
        if not isinstance(node, WaitForEventNode) or node.event != stimulus.name:
            return Step(run)
        if not filters_match(node.where, stimulus.props, run.trigger):
            return Step(run)
        return _walk(run, definition, node.on_event, now, facts)
    if isinstance(stimulus, Wake):
        if run.wake_at is None or now < run.wake_at:
            return Step(run)
        if run.variant == HOLDOUT:
            return Step(_end(run, "completed", "holdout_window", now))
        if run.node is None:
            return _walk(run, definition, definition.start, now, facts)
        node = definition.node(run.node)
        if isinstance(node, WaitNode):
            return _walk(run, definition, node.next, now, facts)
        if isinstance(node, WaitForEventNode):
            return _walk(run, definition, node.on_timeout, now, facts)
        return Step(run)
    return _walk(run, definition, definition.start, now, facts)


def _end(run: Run, status: Status, reason: str, now: datetime) -> Run:
    return replace(
        run, status=status, exit_reason=reason, wake_at=None, waiting_for=None, ended_at=now
    )


@dataclass
class _Walk:
    """What one walk has emitted so far."""

    run: Run
    now: datetime
    visits: dict[str, int]
    variant: str | None
    jobs: list[SendJob] = field(default_factory=list)
    updates: list[AttributeUpdate] = field(default_factory=list)
    webhooks: list[WebhookCall] = field(default_factory=list)
    entered: list[str] = field(default_factory=list)

    def stop(
        self,
        status: Status,
        node: str | None,
        wake: datetime | None = None,
        *,
        waiting_for: str | None = None,
        reason: str | None = None,
    ) -> Step:
        ended = status in ENDED
        moved = replace(
            self.run,
            status=status,
            node=node if node is not None else self.run.node,
            wake_at=wake,
            waiting_for=waiting_for,
            variant=self.variant,
            visits=self.visits,
            exit_reason=reason if ended else None,
            ended_at=self.now if ended else None,
        )
        return Step(
            moved, tuple(self.jobs), tuple(self.updates), tuple(self.webhooks), tuple(self.entered)
        )


def _walk(run: Run, d: Definition, start: str, now: datetime, facts: Facts) -> Step:
    walk = _Walk(run, now, dict(run.visits), run.variant)
    current: str | None = start
    for _ in range(MAX_STEPS):
        if current is None:
            # Ended after the last node entered: the run is counted as exiting there.
            last = walk.entered[-1] if walk.entered else None
            return walk.stop("completed", last, reason="completed")
        node = d.node(current)
        walk.visits[node.id] = walk.visits.get(node.id, 0) + 1
        walk.entered.append(node.id)
        effect_id = f"{run.run_id}:{node.id}:{walk.visits[node.id]}"
        match node:
            case WaitNode():
                wake = wait_end(node, now, facts)
                if wake <= now:
                    current = node.next
                    continue
                return walk.stop("waiting", node.id, wake)
            case WaitForEventNode():
                wake = now + node.timeout.delta
                return walk.stop("waiting", node.id, wake, waiting_for=node.event)
            case ConditionNode():
                current = node.yes if facts.condition(node.id, node.rule) else node.no
            case SplitNode():
                walk.variant = choose_variant(node, run.run_id)
                if walk.variant == HOLDOUT:
                    window = d.goal.within.delta if d.goal is not None else timedelta(0)
                    wake = run.entered_at + window
                    if wake <= now:
                        return walk.stop("completed", node.id, reason="holdout_window")
                    return walk.stop("waiting", node.id, wake)
                current = next(v.next for v in node.variants if v.id == walk.variant)
            case SendNode():
                walk.jobs.append(send_job(run, node, effect_id, walk.variant, now, facts))
                current = node.next
            case UpdateAttributeNode():
                walk.updates.append(
                    AttributeUpdate(
                        effect_id, dict(node.set), dict(node.increment), tuple(node.unset)
                    )
                )
                current = node.next
            case WebhookNode():
                walk.webhooks.append(
                    WebhookCall(
                        effect_id,
                        node.id,
                        node.url,
                        node.method,
                        dict(node.headers),
                        node.body,
                        node.timeout_s,
                        node.retries,
                    )
                )
                current = node.next
            case ExitNode():
                return walk.stop("exited", node.id, reason="exit_node")
    return walk.stop("exited", current, reason="too_many_steps")


def wait_end(node: WaitNode, now: datetime, facts: Facts) -> datetime:
    """When a wait entered at ``now`` ends."""
    if node.duration is not None:
        return now + node.duration.delta
    if node.until is not None:
        return timing.next_local_time(now, facts.timezone, node.until)
    assert node.until_date is not None
    source = node.until_date.attribute
    value = facts.first_seen if source == "first_seen" else facts.attributes.get(source)
    return timing.until_date(now, facts.timezone, node.until_date, value)


def choose_variant(node: SplitNode, run_id: str) -> str:
    """The variant of ``run_id`` at split ``node``: stable (a hash of both) and, over
    many runs, distributed by weight with ``holdout`` percent held out."""
    digest = hashlib.sha256(f"{run_id}:{node.id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if point < node.holdout / 100:
        return HOLDOUT
    point = (point - node.holdout / 100) / (1 - node.holdout / 100)
    total = sum(v.weight for v in node.variants)
    edge = 0.0
    for variant in node.variants:
        edge += variant.weight / total
        if point < edge:
            return variant.id
    return node.variants[-1].id


def best_channels(node: SendNode, reachable: frozenset[str]) -> tuple[Channel, list[Channel]]:
    """The channel to send on and the fallbacks after it. ``best``: the first of the
    fallback order (default ``BEST_ORDER``) the user is reachable on, the reachable
    rest after it; reachable on none, the first of the order (the dispatcher records the
    suppression)."""
    if node.channel != "best":
        return node.channel, list(node.fallback)
    order = list(node.fallback) or list(BEST_ORDER)
    usable = [c for c in order if c in reachable or c in ("inbox", "log")]
    chosen = usable or order
    return chosen[0], chosen[1:]


def send_job(
    run: Run, node: SendNode, job_id: str, variant: str | None, now: datetime, facts: Facts
) -> SendJob:
    channel, fallback = best_channels(node, facts.reachable)
    return SendJob(
        app_id=run.app_id,
        job_id=job_id,
        user_key=run.user_key,
        channel=channel,
        content=node.content,
        template_id=node.template_id,
        # The trigger event's properties are the message's variables ({{ cart_id }}).
        context=dict(run.trigger.get("props") or {}),
        transactional=False,
        journey_id=run.journey_id,
        run_id=run.run_id,
        step_id=node.id,
        created_at=now,
        expires_at=now + node.expires_after.delta if node.expires_after is not None else None,
        fallback_channels=fallback,
        variant_id=variant,
        category=node.category,
    )


# --- goals and filters --------------------------------------------------------------------


def goal_met(goal: Goal, run: Run, event: EventSeen) -> bool:
    """Whether ``event`` is the goal within its window: at most ``within`` after entering
    (inclusive). A run only sees events handled after it was created, so no lower bound
    is needed — and an event stamped a little before the entry that caused the run (the
    purchase right after adding to cart, handled in the same batch) still counts."""
    if event.name != goal.event:
        return False
    if event.ts > run.entered_at + goal.within.delta:
        return False
    return filters_match(goal.where, event.props, run.trigger)


def lookup(props: Mapping[str, Any], path: str) -> Any:
    value: Any = props
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def filters_match(
    filters: list[PropFilter], props: Mapping[str, Any], trigger: Mapping[str, Any]
) -> bool:
    """All ``filters`` hold on ``props``; a ``from_trigger`` operand is read from the
    trigger event's properties (missing there: the filter fails, never matches all)."""
    trigger_props = trigger.get("props") or {}
    for f in filters:
        expected = f.value
        if f.from_trigger is not None:
            expected = lookup(trigger_props, f.from_trigger)
            if expected is None:
                return False
        if not compare(f.op, lookup(props, f.prop), expected):
            return False
    return True


# The filter operators take no time (no before/after): any moment will do.
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def compare(op: str, actual: Any, expected: Any) -> bool:
    """The segment language's attribute operators on one value
    (``libs.rules.evaluation.match_attribute``: a missing value matches only ``ne``,
    ``not_in`` and ``not_exists``; numbers and ISO dates order)."""
    return match_attribute(AttributeCond("value", op, expected), {"value": actual}, _NO_TIME)


# --- entering -----------------------------------------------------------------------------


def run_id(app_id: str, journey_id: str, user_key: str, cause: str) -> str:
    """The run a cause (a segment change, an event or its dedup value, a date's year, a
    broadcast) starts for a user: the same cause never starts two runs."""
    return uuid.uuid5(RUN_NS, json.dumps([app_id, journey_id, user_key, cause])).hex


@dataclass(frozen=True, slots=True)
class History:
    """The user's runs of one journey, as the entry rules need them."""

    active: int = 0
    last_entered_at: datetime | None = None


def may_enter(definition: Definition, history: History, now: datetime) -> str | None:
    """None if the user may enter now, else why not (``once``, ``cooldown``,
    ``max_concurrent``)."""
    entry = definition.entry
    if history.active >= entry.max_concurrent:
        return "max_concurrent"
    if history.last_entered_at is None:
        return None
    if entry.reentry == "once":
        return "once"
    if entry.reentry == "after_cooldown":
        assert entry.cooldown is not None
        if now < history.last_entered_at + entry.cooldown.delta:
            return "cooldown"
    return None


def new_run(
    *,
    app_id: str,
    journey_id: str,
    version: int,
    user_key: str,
    cause: str,
    now: datetime,
    trigger: Mapping[str, Any] | None = None,
    wake_at: datetime | None = None,
) -> Run:
    """A run not yet walked: entered now (``Enter``), or scheduled to start at
    ``wake_at`` (a broadcast's throttled or local-time entry: ``Wake``)."""
    return Run(
        app_id=app_id,
        run_id=run_id(app_id, journey_id, user_key, cause),
        journey_id=journey_id,
        version=version,
        user_key=user_key,
        status="waiting",
        node=None,
        entered_at=now,
        wake_at=wake_at,
        trigger=dict(trigger or {}),
    )


def trigger_context(name: str, event_id: str, props: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": name, "event_id": event_id, "props": dict(props)}
