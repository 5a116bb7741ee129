"""Profile folding and segment evaluation. Pure: time comes in as ``now``.

``apply_event`` folds one event into a profile state; ``evaluate`` answers a parsed
segment rule for one profile; ``membership_changes`` diffs the answers against the
stored memberships. The segments issue extends this (identity merge, counters, the SQL
compiler that must agree with ``evaluate``).
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from libs.schemas import Event, UserAttributed
from libs.schemas.rules import All, AnyOf, AttributeCond, InstallCond, Node, Not, SeenCond

CHANGE_NS = uuid.UUID("a3d7c0de-51e5-4c5b-9a43-0f0c6b8f7c11")
MAX_ATTRIBUTES = 200


@dataclass(frozen=True, slots=True)
class ProfileState:
    user_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    platform: str | None = None
    app_version: str | None = None
    os_version: str | None = None
    device_model: str | None = None
    locale: str | None = None
    timezone: str | None = None
    attribution: dict[str, Any] | None = None
    sessions: int = 0
    purchases: int = 0
    revenue: float = 0.0
    events: int = 0


def apply_event(state: ProfileState, event: Event) -> ProfileState:
    """Fold ``event`` in. Out-of-order safe: an older event never moves ``last_seen``
    back nor overwrites device fields set by a newer one."""
    newer = state.last_seen is None or event.ts >= state.last_seen
    changes: dict[str, Any] = {
        "events": state.events + 1,
        "first_seen": min(filter(None, (state.first_seen, event.ts))),
        "last_seen": max(filter(None, (state.last_seen, event.ts))),
        "user_id": state.user_id or event.user_id,
    }
    if newer:
        for name in ("platform", "app_version", "os_version", "device_model", "locale", "timezone"):
            value = getattr(event, name)
            if value is not None:
                changes[name] = value
    if event.name == "$open":
        changes["sessions"] = state.sessions + 1
    elif event.name == "$purchase":
        changes["purchases"] = state.purchases + 1
        changes["revenue"] = _finite_sum(state.revenue, event.revenue or 0.0)
    elif event.name == "$attributes":
        changes["attributes"] = apply_attributes(state.attributes, event.props)
    return replace(state, **changes)


def apply_attributes(current: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """``$attributes`` props: ``set``, ``set_once``, ``increment`` (numbers), ``unset`` (names)."""
    attrs = dict(current)
    for name, value in _mapping(props.get("set")).items():
        attrs[name] = value
    for name, value in _mapping(props.get("set_once")).items():
        attrs.setdefault(name, value)
    for name, value in _mapping(props.get("increment")).items():
        if _is_number(value):
            base = attrs.get(name, 0)
            attrs[name] = _finite_sum(base if _is_number(base) else 0, value)
    unset = props.get("unset")
    for name in unset if isinstance(unset, list) else []:
        if isinstance(name, str):
            attrs.pop(name, None)
    if len(attrs) > MAX_ATTRIBUTES:
        attrs = dict(list(attrs.items())[:MAX_ATTRIBUTES])
    return attrs


def _mapping(value: Any) -> dict[str, Any]:
    # Malformed parts of $attributes (a list where an object belongs) are ignored.
    return value if isinstance(value, dict) else {}


INT64_MAX = 2**63 - 1


def _finite_sum(left: float, right: float) -> float:
    """``left + right``, saturating instead of overflowing: integers stay within int64
    (what every downstream store and encoder takes) and floats stay finite (JSON and
    Postgres JSONB have no infinity), so a profile always stays storable."""
    if isinstance(left, int) and isinstance(right, int):
        return max(-INT64_MAX - 1, min(INT64_MAX, left + right))
    total = float(left) + float(right)
    if math.isfinite(total):
        return total
    return math.copysign(sys.float_info.max, total) if not math.isnan(total) else float(left)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(left: Any, right: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python says it is)."""
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return bool(left == right)


def apply_attribution(state: ProfileState, attributed: UserAttributed) -> ProfileState:
    """The profile keeps the attribution of its first install, upgraded (organic → a
    tracker) when a late click matches that same install."""
    current = state.attribution
    if current is not None and current.get("install_event_id") != attributed.install_event_id:
        return state
    if (
        current is not None
        and current.get("method") != "organic"
        and attributed.method == "organic"
    ):
        return state
    return replace(
        state,
        attribution={
            "attribution_id": attributed.attribution_id,
            "install_event_id": attributed.install_event_id,
            "tracker_token": attributed.tracker_token,
            "method": attributed.method,
            "kind": attributed.kind,
            "status": attributed.status,
            "click_id": attributed.click_id,
            "network": attributed.network,
            "campaign": attributed.campaign,
            "channel": attributed.channel,
            "install_ts": attributed.install_ts.isoformat(),
            "fraud_reasons": list(attributed.fraud_reasons),
        },
    )


def evaluate(node: Node, state: ProfileState, now: datetime) -> bool:
    if isinstance(node, All):
        return all(evaluate(n, state, now) for n in node.nodes)
    if isinstance(node, AnyOf):
        return any(evaluate(n, state, now) for n in node.nodes)
    if isinstance(node, Not):
        return not evaluate(node.node, state, now)
    if isinstance(node, SeenCond):
        seen = state.first_seen if node.which == "first_seen" else state.last_seen
        if seen is None:
            return False
        try:
            threshold = now - node.ago
        except OverflowError:  # further back than datetime reaches: nobody is before it
            return node.op == "after"
        return seen < threshold if node.op == "before" else seen >= threshold
    if isinstance(node, InstallCond):
        attribution = state.attribution or {}
        key = "tracker_token" if node.field == "tracker" else node.field
        return attribution.get(key) == node.value
    return _attribute(node, state.attributes)


def _attribute(cond: AttributeCond, attributes: dict[str, Any]) -> bool:
    present = cond.attribute in attributes and attributes[cond.attribute] is not None
    if cond.op == "exists":
        return present
    if cond.op == "not_exists":
        return not present
    if not present:
        return cond.op in {"ne", "not_in"}
    actual = attributes[cond.attribute]
    expected = cond.value
    match cond.op:
        case "eq":
            return _same(actual, expected)
        case "ne":
            return not _same(actual, expected)
        case "in":
            return any(_same(actual, v) for v in expected)
        case "not_in":
            return not any(_same(actual, v) for v in expected)
        case "contains":
            return isinstance(actual, str) and expected in actual
        case "starts_with":
            return isinstance(actual, str) and actual.startswith(expected)
    left, right = _comparable(actual, expected)
    if left is None or right is None:
        return False
    match cond.op:
        case "gt":
            return bool(left > right)
        case "gte":
            return bool(left >= right)
        case "lt":
            return bool(left < right)
        case _:
            return bool(left <= right)


def _comparable(actual: Any, expected: Any) -> tuple[Any, Any]:
    """Numbers compare as numbers; ISO dates as dates; anything else does not compare."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return None, None
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual, expected
    if isinstance(actual, str) and isinstance(expected, str):
        return _as_date(actual), _as_date(expected)
    return None, None


def _as_date(value: str) -> datetime | None:
    """An ISO date or datetime; a value without a zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Change:
    segment_id: str
    change: str  # entered | exited
    change_id: str


def membership_changes(
    *,
    app_id: str,
    user_key: str,
    segments: dict[str, Node],
    current: set[str],
    state: ProfileState,
    now: datetime,
    cause: str,
) -> list[Change]:
    """What entering/exiting ``state`` implies for the ``segments`` (id → rule), given the
    ids it is ``current``ly a member of. Ids are deterministic in ``cause`` (an event id),
    so re-deciding the same cause yields the same change ids."""
    changes = []
    for segment_id, rule in sorted(segments.items()):
        inside = evaluate(rule, state, now)
        was = segment_id in current
        if inside != was:
            kind = "entered" if inside else "exited"
            change_id = uuid.uuid5(
                CHANGE_NS, json.dumps([app_id, user_key, segment_id, kind, cause])
            )
            changes.append(Change(segment_id, kind, change_id.hex))
    return changes
