"""Checking a journey: its shape (pydantic), its graph and what it references.

``parse`` is the one way in: admin calls it on every write and ``/validate``, the
journey service on every stored version it loads. Errors are ``DefinitionError`` with
the path of the bad value, relative to the journey (``definition.nodes.3.next``,
``trigger.segment``) so that admin answers 422 naming it.

Graph rules: every edge names an existing node; every node is reachable from
``start``; a cycle must pass through a wait (``wait`` or ``wait_for_event``), so that
one stimulus never loops forever; condition rules parse in the segment language.

Pure: the existence of segments and templates is checked by the caller against its
store, from ``references``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from libs.journeys.definition import (
    WAITING_TYPES,
    ConditionNode,
    Definition,
    DefinitionError,
    EventTrigger,
    Journey,
    Node,
    ScheduleTrigger,
    SegmentTrigger,
    SendNode,
    SplitNode,
    WaitForEventNode,
    legacy_form,
)
from libs.rules.language import RuleError, parse_rule, referenced_segments

_TAGS = frozenset(
    {
        "wait",
        "wait_for_event",
        "condition",
        "split",
        "send",
        "update_attribute",
        "webhook",
        "exit",
        "segment_entered",
        "segment_exited",
        "event",
        "attribute_changed",
        "geofence",
        "date",
        "schedule",
    }
)


def parse(trigger: Any, definition: Any) -> Journey:
    """Validate a journey's trigger and definition (legacy forms accepted); raises
    ``DefinitionError`` naming the first bad value. Deterministic; no I/O."""
    trigger, definition = legacy_form(trigger, definition)
    try:
        journey = Journey.model_validate({"trigger": trigger, "definition": definition})
    except ValidationError as exc:
        raise _error(exc) from None
    check_graph(journey)
    return journey


def _error(exc: ValidationError) -> DefinitionError:
    first = exc.errors()[0]
    parts: list[str] = []
    previous: Any = None
    for part in first["loc"]:
        # A discriminated union puts the member's tag in the location: drop it.
        if (
            isinstance(part, str)
            and part in _TAGS
            and (isinstance(previous, int) or previous == "trigger")
        ):
            previous = part
            continue
        parts.append(str(part))
        previous = part
    message = first["msg"].removeprefix("Value error, ")
    return DefinitionError(".".join(parts) or "definition", message)


def edges(node: Node) -> Iterator[tuple[str, str]]:
    """(field path within the node, target id) of each outgoing edge."""
    for name in ("next", "on_event", "on_timeout", "yes", "no"):
        target = getattr(node, name, None)
        if isinstance(target, str):
            yield name, target
    if isinstance(node, SplitNode):
        for index, variant in enumerate(node.variants):
            yield f"variants.{index}.next", variant.next


def check_graph(journey: Journey) -> None:
    """Raise ``DefinitionError`` for the first graph fault (see the module doc)."""
    d = journey.definition
    index: dict[str, int] = {}
    for i, node in enumerate(d.nodes):
        if node.id in index:
            raise DefinitionError(f"definition.nodes.{i}.id", f"node id {node.id!r} is repeated")
        index[node.id] = i
    if d.start not in index:
        raise DefinitionError("definition.start", f"no node {d.start!r}")
    for i, node in enumerate(d.nodes):
        for where, target in edges(node):
            if target not in index:
                raise DefinitionError(f"definition.nodes.{i}.{where}", f"no node {target!r}")
    seen: set[str] = set()
    stack = [d.start]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(t for _, t in edges(d.nodes[index[current]]))
    for i, node in enumerate(d.nodes):
        if node.id not in seen:
            raise DefinitionError(f"definition.nodes.{i}", f"node {node.id!r} is unreachable")
    _check_instant_cycles(d, index)
    from_trigger_ok = isinstance(journey.trigger, EventTrigger)
    for i, node in enumerate(d.nodes):
        if isinstance(node, ConditionNode):
            try:
                parse_rule(node.rule)
            except RuleError as exc:
                path = f"definition.nodes.{i}.rule" + ("" if exc.path == "rule" else f".{exc.path}")
                raise DefinitionError(path, exc.reason) from None
        if isinstance(node, WaitForEventNode) and not from_trigger_ok:
            for j, f in enumerate(node.where):
                if f.from_trigger is not None:
                    raise DefinitionError(
                        f"definition.nodes.{i}.where.{j}.from_trigger",
                        "only an event-triggered journey has trigger properties",
                    )
    if d.goal is not None and not from_trigger_ok:
        for j, f in enumerate(d.goal.where):
            if f.from_trigger is not None:
                raise DefinitionError(
                    f"definition.goal.where.{j}.from_trigger",
                    "only an event-triggered journey has trigger properties",
                )
    if isinstance(journey.trigger, ScheduleTrigger):
        schedule_times(journey.trigger)


def _check_instant_cycles(d: Definition, index: dict[str, int]) -> None:
    """A cycle of nodes that are not waits would run forever on one stimulus."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node_id: str) -> None:
        state[node_id] = 1
        node = d.nodes[index[node_id]]
        if node.type not in WAITING_TYPES:
            for _, target in edges(node):
                if state.get(target) == 1 and d.nodes[index[target]].type not in WAITING_TYPES:
                    raise DefinitionError(
                        f"definition.nodes.{index[target]}",
                        f"a cycle through {target!r} has no wait on it",
                    )
                if target not in state:
                    visit(target)
        state[node_id] = 2

    # A wait is never expanded, so every path walked holds no wait: a node met again on
    # the current path closes a cycle without one.
    for node in d.nodes:
        if node.id not in state and node.type not in WAITING_TYPES:
            visit(node.id)


def schedule_times(trigger: ScheduleTrigger) -> tuple[datetime, datetime | None]:
    """The schedule's first time and its end; raises ``DefinitionError`` for a time
    without an offset, an end before the start, or a recurrence under an hour."""
    start = _aware(trigger.at, "trigger.at")
    until = _aware(trigger.until, "trigger.until") if trigger.until else None
    if until is not None and until < start:
        raise DefinitionError("trigger.until", "must not be before at")
    if trigger.every is not None and trigger.every.delta.total_seconds() < 3600:
        raise DefinitionError("trigger.every", "a recurring broadcast repeats at most hourly")
    return start, until


def _aware(value: str, path: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise DefinitionError(path, "must be an ISO 8601 time") from None
    if when.tzinfo is None:
        raise DefinitionError(path, "must carry a UTC offset (…Z or +03:30)")
    return when


@dataclass(frozen=True)
class References:
    """What a journey names outside itself, each with the path that names it."""

    segments: dict[str, str] = field(default_factory=dict)
    templates: dict[str, str] = field(default_factory=dict)


def references(journey: Journey) -> References:
    """The segments and templates ``journey`` references (first path of each)."""
    refs = References()
    trigger = journey.trigger
    if isinstance(trigger, SegmentTrigger | ScheduleTrigger):
        refs.segments.setdefault(trigger.segment, "trigger.segment")
    for i, node in enumerate(journey.definition.nodes):
        if isinstance(node, ConditionNode):
            for segment in sorted(referenced_segments(parse_rule(node.rule))):
                refs.segments.setdefault(segment, f"definition.nodes.{i}.rule")
        if isinstance(node, SendNode) and node.template_id is not None:
            refs.templates.setdefault(node.template_id, f"definition.nodes.{i}.template_id")
    return refs


def dump(model: BaseModel) -> dict[str, Any]:
    """The JSON form stored and answered (defaults included, None left out)."""
    return model.model_dump(mode="json", exclude_none=True)
