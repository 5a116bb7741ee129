"""The journey definition language (configuration written by marketers through admin).

A journey is a **trigger** (who enters, and when) and a **definition**: a graph of
nodes starting at ``start``, a **goal**, **entry** rules and **limits**::

    {"version": 2,
     "start": "wait_2h",
     "nodes": [
       {"id": "wait_2h", "type": "wait", "duration": {"hours": 2}, "next": "bought"},
       {"id": "bought", "type": "wait_for_event", "event": "$purchase",
        "where": [{"prop": "cart_id", "op": "eq", "from_trigger": "cart_id"}],
        "timeout": {"minutes": 1}, "on_event": "done", "on_timeout": "push"},
       {"id": "push", "type": "send", "channel": "push",
        "content": {"body": "10% off if you buy within 24 hours"}, "next": "done"},
       {"id": "done", "type": "exit"}],
     "goal": {"event": "$purchase", "within": {"days": 3}},
     "entry": {"reentry": "after_cooldown", "cooldown": {"days": 7}, "max_concurrent": 1},
     "limits": {"daily_cap": 10000, "total_cap": 100000, "per_second": 50}}

The full reference with examples is ``docs/journeys.md``. This module is the language's
shape (pydantic models: what a field may hold); ``libs.journeys.validate`` checks the
graph (reachability, dangling edges, cycles only through waits) and the references.

Legacy definitions (before language version 2) are ``{"steps": [{"id", "send"}]}``
with the trigger ``{"segment_entered": id}``; ``parse`` turns them into a chain of send
nodes, so journeys stored before the engine keep working unchanged.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from libs.schemas.base import Id
from libs.schemas.send_jobs import MessageContent

LANGUAGE_VERSION = 2
MAX_NODES = 100
MAX_DURATION = timedelta(days=366 * 2)

Channel = Literal["push", "web_push", "sms", "email", "in_app", "inbox", "log"]
# "best": the first channel the user is reachable on, in ``fallback`` order
# (default BEST_ORDER); the dispatcher falls back down the rest.
SendChannel = Literal["push", "web_push", "sms", "email", "in_app", "inbox", "log", "best"]
BEST_ORDER: tuple[Channel, ...] = ("push", "web_push", "in_app", "sms", "email")

NodeId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
SegmentId = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
LocalTime = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FilterOp = Literal[
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "exists",
    "not_exists",
]
VALUELESS: frozenset[str] = frozenset({"exists", "not_exists"})
_TRIGGER_PATH = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+){0,3}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Duration(_Frozen):
    """A span: exactly one of minutes, hours, days (non-negative, at most two years)."""

    minutes: float | None = Field(default=None, ge=0)
    hours: float | None = Field(default=None, ge=0)
    days: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_unit(self) -> Duration:
        given = [v for v in (self.minutes, self.hours, self.days) if v is not None]
        if len(given) != 1:
            raise ValueError('a duration is one of {"minutes": n}, {"hours": n}, {"days": n}')
        if self.delta > MAX_DURATION:
            raise ValueError("a duration is at most two years")
        return self

    @property
    def delta(self) -> timedelta:
        return timedelta(minutes=self.minutes or 0, hours=self.hours or 0, days=self.days or 0)


class PropFilter(_Frozen):
    """A filter on an event's property: ``value`` is a literal; ``from_trigger`` names a
    property of the event that started the run (dotted for nested: ``cart.id``), so a
    wait can match "the purchase of *this* cart"."""

    prop: Name
    op: FilterOp
    value: Any = None
    from_trigger: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _operand(self) -> PropFilter:
        if self.op in VALUELESS:
            if self.value is not None or self.from_trigger is not None:
                raise ValueError(f"{self.op} takes no value")
        elif (self.value is None) == (self.from_trigger is None):
            raise ValueError(f"{self.op} needs exactly one of value or from_trigger")
        if self.from_trigger is not None and not _TRIGGER_PATH.match(self.from_trigger):
            raise ValueError("from_trigger is a property name, dotted for nested properties")
        if self.op in {"in", "not_in"} and self.value is not None:
            if not isinstance(self.value, list) or not 0 < len(self.value) <= 1000:
                raise ValueError(f"{self.op} needs a list of 1 to 1000 values")
        return self


Filters = Annotated[list[PropFilter], Field(max_length=10)]


# --- triggers -----------------------------------------------------------------------------


class SegmentTrigger(_Frozen):
    type: Literal["segment_entered", "segment_exited"]
    segment: SegmentId


class EventTrigger(_Frozen):
    """Entering on an event; ``dedup_key`` names a property (``order_id``) whose value
    starts at most one run per user (a resent event of the same order starts nothing)."""

    type: Literal["event"]
    event: Name
    where: Filters = Field(default_factory=list)
    dedup_key: Name | None = None


class AttributeTrigger(_Frozen):
    """Entering when an ``$attributes`` write names ``attribute`` (set, set_once,
    increment or unset), optionally only when its new value passes ``to``."""

    type: Literal["attribute_changed"]
    attribute: Name
    to: PropFilter | None = None


class GeofenceTrigger(_Frozen):
    """Entering when a ``$location`` moves the user into (``enter``) or out of
    (``exit``) the circle. The first location known is a crossing only into it."""

    type: Literal["geofence"]
    on: Literal["enter", "exit"]
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    radius_m: float = Field(gt=0, le=100_000)
    fence_id: Name | None = None


class DateTrigger(_Frozen):
    """Yearly on the month and day of a profile date — an attribute (``birthday``:
    ``YYYY-MM-DD`` or an ISO time) or ``first_seen`` (sign-up anniversary) — shifted by
    ``offset_days``, at ``at`` in the user's time zone. ``first_seen`` enters only from
    the first anniversary on."""

    type: Literal["date"]
    attribute: Name
    at: LocalTime = "10:00"
    offset_days: int = Field(default=0, ge=-31, le=31)


class ScheduleTrigger(_Frozen):
    """A broadcast to a segment's members: once ``at``, or every ``every`` from ``at``
    (until ``until``). With ``local_time`` each user is woken at that time of their day
    (the first such time at or after the broadcast); ``per_second`` throttles entries."""

    type: Literal["schedule"]
    segment: SegmentId
    at: str = Field(max_length=40)  # ISO time with an offset, validated in ``schedule_at``
    every: Duration | None = None
    until: str | None = Field(default=None, max_length=40)
    local_time: LocalTime | None = None
    per_second: int | None = Field(default=None, ge=1, le=100_000)


Trigger = Annotated[
    SegmentTrigger
    | EventTrigger
    | AttributeTrigger
    | GeofenceTrigger
    | DateTrigger
    | ScheduleTrigger,
    Field(discriminator="type"),
]


# --- nodes --------------------------------------------------------------------------------


class _Node(_Frozen):
    id: NodeId


class UntilTime(_Frozen):
    """The next moment the user's local clock shows ``time`` on an allowed weekday."""

    time: LocalTime
    weekdays: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)


class UntilDate(_Frozen):
    """The profile date ``attribute`` (this year's or next year's occurrence when
    ``yearly``) plus ``offset``, at ``time`` local; already past: no wait."""

    attribute: Name
    offset: Duration | None = None
    time: LocalTime = "00:00"
    yearly: bool = False
    before: bool = False  # the offset is subtracted (a day *before* the birthday)


class WaitNode(_Node):
    type: Literal["wait"]
    duration: Duration | None = None
    until: UntilTime | None = None
    until_date: UntilDate | None = None
    next: NodeId

    @model_validator(mode="after")
    def _one_kind(self) -> WaitNode:
        if sum(x is not None for x in (self.duration, self.until, self.until_date)) != 1:
            raise ValueError("a wait needs exactly one of duration, until, until_date")
        return self


class WaitForEventNode(_Node):
    type: Literal["wait_for_event"]
    event: Name
    where: Filters = Field(default_factory=list)
    timeout: Duration
    on_event: NodeId
    on_timeout: NodeId


class ConditionNode(_Node):
    """A segment rule (the segment language) on the user's profile at this moment."""

    type: Literal["condition"]
    rule: dict[str, Any]
    yes: NodeId
    no: NodeId


class Variant(_Frozen):
    id: NodeId
    weight: int = Field(ge=1, le=10_000)
    next: NodeId


class SplitNode(_Node):
    """A/B/n: each run takes one variant by weight, or the holdout (control) group —
    ``holdout`` percent of runs that receive nothing and are measured for uplift."""

    type: Literal["split"]
    variants: list[Variant] = Field(min_length=1, max_length=10)
    holdout: float = Field(default=0, ge=0, lt=100)

    @model_validator(mode="after")
    def _unique(self) -> SplitNode:
        ids = [v.id for v in self.variants]
        if len(ids) != len(set(ids)):
            raise ValueError("variant ids must be unique")
        if HOLDOUT in ids:
            raise ValueError(f"{HOLDOUT!r} is the holdout group's id")
        return self


HOLDOUT = "holdout"


class SendNode(_Node):
    """One message: ``channel`` (or ``best``: the first reachable of ``fallback``),
    falling back down ``fallback``; a template or inline content whose variables may use
    ``trigger.*`` (the trigger event's properties) and ``profile.*``."""

    type: Literal["send"]
    channel: SendChannel
    fallback: list[Channel] = Field(default_factory=list, max_length=6)
    content: MessageContent | None = None
    template_id: Id | None = None
    category: Annotated[str, StringConstraints(max_length=64)] | None = None
    expires_after: Duration | None = None
    next: NodeId | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SendNode:
        if (self.content is None) == (self.template_id is None):
            raise ValueError("a send needs exactly one of content or template_id")
        return self


class UpdateAttributeNode(_Node):
    """Write profile attributes (through the segmenter, the profiles' one writer)."""

    type: Literal["update_attribute"]
    set: dict[Name, Any] = Field(default_factory=dict, max_length=50)
    increment: dict[Name, float] = Field(default_factory=dict, max_length=50)
    unset: list[Name] = Field(default_factory=list, max_length=50)
    next: NodeId | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateAttributeNode:
        if not (self.set or self.increment or self.unset):
            raise ValueError("an update_attribute needs set, increment or unset")
        return self


class WebhookNode(_Node):
    """An HTTP call (POST by default) with a JSON body; retried with backoff on 5xx,
    429 and network errors up to ``retries`` times; a private or loopback address is
    refused unless the platform allows it."""

    type: Literal["webhook"]
    url: Annotated[str, StringConstraints(min_length=8, max_length=2048, pattern=r"^https?://")]
    method: Literal["POST", "PUT", "PATCH", "GET"] = "POST"
    headers: dict[Annotated[str, StringConstraints(max_length=128)], str] = Field(
        default_factory=dict, max_length=20
    )
    body: dict[str, Any] | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=30)
    retries: int = Field(default=3, ge=0, le=10)
    next: NodeId | None = None


class ExitNode(_Node):
    type: Literal["exit"]


Node = Annotated[
    WaitNode
    | WaitForEventNode
    | ConditionNode
    | SplitNode
    | SendNode
    | UpdateAttributeNode
    | WebhookNode
    | ExitNode,
    Field(discriminator="type"),
]
# Nodes that end a traversal step (the run sleeps there): cycles must pass through one.
WAITING_TYPES = frozenset({"wait", "wait_for_event"})


class Goal(_Frozen):
    """The conversion: ``event`` (with filters) within ``within`` of entering exits the
    run at whatever node it is and counts as converted."""

    event: Name
    where: Filters = Field(default_factory=list)
    within: Duration = Field(default_factory=lambda: Duration(days=7))


class Entry(_Frozen):
    """Who may enter again: ``once`` ever, ``after_cooldown`` (since their last entry),
    or ``always``; and at most ``max_concurrent`` runs of one user at a time."""

    reentry: Literal["once", "after_cooldown", "always"] = "once"
    cooldown: Duration | None = None
    max_concurrent: int = Field(default=1, ge=1, le=100)

    @model_validator(mode="after")
    def _cooldown(self) -> Entry:
        if (self.reentry == "after_cooldown") != (self.cooldown is not None):
            raise ValueError("cooldown goes with reentry after_cooldown, and only with it")
        return self


class Limits(_Frozen):
    """Per-journey sending limits: messages a UTC day, messages ever, messages a second
    (excess sends of a second wait for the next free slot; capped sends are skipped)."""

    daily_cap: int | None = Field(default=None, ge=1)
    total_cap: int | None = Field(default=None, ge=1)
    per_second: float | None = Field(default=None, gt=0, le=100_000)


class Definition(_Frozen):
    version: Literal[2] = 2
    start: NodeId
    nodes: list[Node] = Field(min_length=1, max_length=MAX_NODES)
    goal: Goal | None = None
    entry: Entry = Field(default_factory=Entry)
    limits: Limits = Field(default_factory=Limits)

    def node(self, node_id: str) -> Node:
        """The node ``node_id``; raises ``KeyError`` (validated definitions have it)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


class Journey(_Frozen):
    """What the engine runs: a trigger and a definition (one stored version)."""

    trigger: Trigger
    definition: Definition


class DefinitionError(ValueError):
    """A definition is invalid; ``path`` names the bad value (``nodes.3.next``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def legacy_form(trigger: Any, definition: Any) -> tuple[Any, Any]:
    """Translate a pre-engine journey (trigger ``{"segment_entered": id}``, definition
    ``{"steps": [{"id", "send": {...}}]}``) to the current form: a chain of sends in step
    order, entered once. Anything else is returned unchanged."""
    if isinstance(trigger, dict) and set(trigger) == {"segment_entered"}:
        trigger = {"type": "segment_entered", "segment": trigger["segment_entered"]}
    if isinstance(definition, dict) and "steps" in definition and "nodes" not in definition:
        steps = definition["steps"]
        if isinstance(steps, list) and steps and all(isinstance(s, dict) for s in steps):
            nodes: list[dict[str, Any]] = []
            for index, step in enumerate(steps):
                send = dict(step.get("send") or {})
                if "fallback_channels" in send:
                    send["fallback"] = send.pop("fallback_channels")
                follower = steps[index + 1].get("id") if index + 1 < len(steps) else None
                nodes.append({"id": step.get("id"), "type": "send", **send, "next": follower})
            definition = {"start": steps[0].get("id"), "nodes": nodes}
    return trigger, definition
