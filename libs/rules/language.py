"""The segment rule language (a public contract: marketers and backends write it by hand).

```
node      := {"all": [node, ...]} | {"any": [node, ...]} | {"not": node} | condition
condition := {"attribute": "city", "op": "eq", "value": "Tehran"}
           | {"attribute": "signup_at", "op": "before", "ago": {"days": 30}}   (or after)
           | {"event": "$purchase", "where": [{"prop": "sku", "op": "eq", "value": "A"}],
              "count": {"op": "gte", "value": 5}, "within": {"days": 30}}
           | {"event": "$open", "between": {"from": "2024-01-01", "to": "2024-01-31"}}
           | {"revenue": {"op": "gt", "value": 1000000}, "within": {"days": 14}}
           | {"first_seen": {"op": "after", "ago": {"hours": 24}}}     (also last_seen)
           | {"install": {"tracker": "TOKEN"}}     (or network, campaign, channel)
           | {"reachable": "push"}                 (push, sms, email, web_push, in_app)
           | {"geofence": {"lat": 35.6892, "lon": 51.389, "radius_m": 2000},
              "inside": false, "max_age": {"hours": 1}}
           | {"segment": "SEGMENT_ID"}
           | {"rfm": {"r": [4, 5], "f": [4, 5], "m": [3, 5]}}
```

Meaning (both evaluators, ``libs.rules.evaluation`` and ``libs.rules.sql``,
implement it):

- Durations are ``{"minutes"|"hours"|"days": n}``. ``before`` means strictly earlier than
  ``now - ago``; ``after`` means at or later than it.
- ``event``: ``count`` defaults to ``{"op": "gte", "value": 1}``; ``{"op": "eq", "value": 0}``
  is "never". Without ``where`` and with a window of whole days (or ``between`` dates, or
  no window: all time), it is answered from **daily counters**, so a window covers whole
  UTC days: from the UTC date of ``now - within`` to the latest day. A ``where`` filter or
  a window of minutes/hours is answered from the user's **recent events** (exact
  timestamps, kept ``RECENT_EVENTS_DAYS``), so those need ``within`` of at most that many
  days and cannot use ``between``. ``where`` filters use the attribute operators on the
  event's props.
- ``revenue``: the sum of event revenue (all event names) in the window, from daily
  counters (so whole UTC days); no events sum to 0.
- ``reachable``: push = permission granted, a valid token and not opted out of push;
  sms/email = a phone/email and not opted out; web_push = a valid subscription and not
  opted out; in_app = seen in the last 30 days and not opted out of in_app.
- ``geofence``: needs a location no older than ``max_age``; ``inside`` true matches users
  known to be within ``radius_m`` (haversine, inclusive), false those known to be
  outside; users with no recent location match neither.
- ``segment``: the user is a member of that segment. ``parse_rule`` checks, with a
  ``resolver``, that referenced segments exist and that references make no cycle.
- ``rfm``: each given score's ``[lo, hi]`` (1..5, inclusive) must contain the user's score;
  scores are defined in ``libs.rules.evaluation`` (quintiles per app).

``parse_rule`` validates the JSON and returns frozen nodes; a bad node raises
``RuleError`` naming its path (``all.1.op``). Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

MAX_DEPTH = 8
MAX_NODES = 200
MAX_WHERE = 10
ATTRIBUTE_OPS = frozenset(
    {
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
    }
)
RELATIVE_OPS = frozenset({"before", "after"})
VALUELESS_OPS = frozenset({"exists", "not_exists"})
COMPARE_OPS = ("eq", "ne", "gt", "gte", "lt", "lte")
DURATION_UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
MAX_DURATION_S = 100 * 366 * 86400
INSTALL_FIELDS = ("tracker", "network", "campaign", "channel")
CHANNELS = ("push", "sms", "email", "web_push", "in_app")
RECENT_EVENTS_DAYS = 90
MAX_COUNT = 10**9
COORDINATE_DECIMALS = 7
MAX_RADIUS_M = 20_037_600  # half the Earth's circumference: everything is inside

# Given a referenced segment id, its raw rule, or None when no such segment exists.
Resolver = Callable[[str], Any]


class RuleError(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path or 'rule'}: {reason}")
        self.path = path or "rule"
        self.reason = reason


@dataclass(frozen=True, slots=True)
class All:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    node: Node


@dataclass(frozen=True, slots=True)
class AttributeCond:
    """Also an event ``where`` filter (``attribute`` is then the prop name). For ``before``
    and ``after`` the value is the ``ago`` timedelta."""

    attribute: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class SeenCond:
    which: Literal["first_seen", "last_seen"]
    op: Literal["before", "after"]
    ago: timedelta


@dataclass(frozen=True, slots=True)
class InstallCond:
    """The source of the install the profile keeps (its first counted one). An install
    rejected as fraud was never attributed: it matches no source."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class Window:
    """``within`` (a duration back from now) or ``between`` (inclusive UTC dates); neither
    means all time."""

    within: timedelta | None = None
    between: tuple[date, date] | None = None

    @property
    def whole_days(self) -> bool:
        return self.within is None or self.within % timedelta(days=1) == timedelta(0)


@dataclass(frozen=True, slots=True)
class EventCond:
    name: str
    where: tuple[AttributeCond, ...]
    count_op: str
    count: int
    window: Window

    @property
    def exact(self) -> bool:
        """True when answered from recent events, False when from daily counters."""
        return bool(self.where) or not self.window.whole_days


@dataclass(frozen=True, slots=True)
class RevenueCond:
    op: str
    value: float
    window: Window


@dataclass(frozen=True, slots=True)
class ReachableCond:
    channel: str


@dataclass(frozen=True, slots=True)
class GeofenceCond:
    lat: float
    lon: float
    radius_m: float
    inside: bool
    max_age: timedelta


@dataclass(frozen=True, slots=True)
class SegmentCond:
    segment_id: str


@dataclass(frozen=True, slots=True)
class RfmCond:
    r: tuple[int, int] | None
    f: tuple[int, int] | None
    m: tuple[int, int] | None


Node = (
    All
    | AnyOf
    | Not
    | AttributeCond
    | SeenCond
    | InstallCond
    | EventCond
    | RevenueCond
    | ReachableCond
    | GeofenceCond
    | SegmentCond
    | RfmCond
)


def parse_rule(
    raw: Any, resolver: Resolver | None = None, *, segment_id: str | None = None
) -> Node:
    """Validate rule JSON; raises ``RuleError`` with the path of the first bad node.

    With ``resolver``, every ``segment`` reference must resolve, and following references
    (through the resolved rules) must never come back to a segment on the way, nor to
    ``segment_id`` (the segment this rule belongs to); the error names the cycle.
    """
    node = _parse(raw, "", 0, [0])
    if resolver is not None:
        _check_references(node, resolver, [segment_id] if segment_id else [], {})
    return node


def _join(path: str, part: str | int) -> str:
    return f"{path}.{part}" if path else str(part)


LEAVES = (
    "attribute",
    "first_seen",
    "last_seen",
    "install",
    "event",
    "revenue",
    "reachable",
    "geofence",
    "segment",
    "rfm",
)


def _parse(raw: Any, path: str, depth: int, counter: list[int]) -> Node:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise RuleError(path, f"a rule may have at most {MAX_NODES} nodes")
    if depth > MAX_DEPTH:
        raise RuleError(path, f"a rule may nest at most {MAX_DEPTH} levels")
    if not isinstance(raw, Mapping):
        raise RuleError(path, "a rule node must be a JSON object")
    for group in ("all", "any"):
        if group in raw:
            _only(raw, {group}, path)
            items = raw[group]
            if not isinstance(items, list) or not items:
                raise RuleError(_join(path, group), "must be a non-empty list of nodes")
            nodes = tuple(
                _parse(item, _join(_join(path, group), i), depth + 1, counter)
                for i, item in enumerate(items)
            )
            return All(nodes) if group == "all" else AnyOf(nodes)
    if "not" in raw:
        _only(raw, {"not"}, path)
        return Not(_parse(raw["not"], _join(path, "not"), depth + 1, counter))
    if "attribute" in raw:
        return _attribute(raw, path, "attribute")
    for which in ("first_seen", "last_seen"):
        if which in raw:
            _only(raw, {which}, path)
            return _seen(raw[which], which, _join(path, which))
    if "install" in raw:
        _only(raw, {"install"}, path)
        return _install(raw["install"], _join(path, "install"))
    if "event" in raw:
        return _event(raw, path)
    if "revenue" in raw:
        return _revenue(raw, path)
    if "reachable" in raw:
        _only(raw, {"reachable"}, path)
        if raw["reachable"] not in CHANNELS:
            raise RuleError(_join(path, "reachable"), f"must be one of {', '.join(CHANNELS)}")
        return ReachableCond(raw["reachable"])
    if "geofence" in raw:
        return _geofence(raw, path)
    if "segment" in raw:
        _only(raw, {"segment"}, path)
        ref = raw["segment"]
        if not isinstance(ref, str) or not 0 < len(ref) <= 32:
            raise RuleError(_join(path, "segment"), "must be a segment id of 1 to 32 characters")
        return SegmentCond(ref)
    if "rfm" in raw:
        _only(raw, {"rfm"}, path)
        return _rfm(raw["rfm"], _join(path, "rfm"))
    raise RuleError(path, f"unknown node; expected all, any, not, {', '.join(LEAVES)}")


def _only(raw: Mapping[str, Any], allowed: set[str], path: str) -> None:
    extra = sorted(set(raw) - allowed, key=str)
    if extra:
        raise RuleError(_join(path, str(extra[0])), "unexpected key")


def _attribute(raw: Mapping[str, Any], path: str, key: str) -> AttributeCond:
    _only(raw, {key, "op", "value", "ago"}, path)
    name = raw[key]
    if not isinstance(name, str) or not 0 < len(name) <= 128:
        raise RuleError(_join(path, key), "must be a name of 1 to 128 characters")
    op = raw.get("op")
    if not isinstance(op, str) or op not in ATTRIBUTE_OPS | RELATIVE_OPS:
        allowed = ", ".join(sorted(ATTRIBUTE_OPS | RELATIVE_OPS))
        raise RuleError(_join(path, "op"), f"must be one of {allowed}")
    if op in RELATIVE_OPS:
        if "value" in raw:
            raise RuleError(_join(path, "value"), f"{op} takes ago, not a value")
        return AttributeCond(name, op, parse_duration(raw.get("ago"), _join(path, "ago")))
    if "ago" in raw:
        raise RuleError(_join(path, "ago"), "only before and after take ago")
    if op in VALUELESS_OPS:
        if "value" in raw:
            raise RuleError(_join(path, "value"), f"{op} takes no value")
        return AttributeCond(name, op, None)
    if "value" not in raw:
        raise RuleError(_join(path, "value"), f"{op} needs a value")
    value = raw["value"]
    if op in {"in", "not_in"}:
        if not isinstance(value, list) or not value or len(value) > 1000:
            raise RuleError(_join(path, "value"), f"{op} needs a list of 1 to 1000 values")
        value = tuple(value)
    elif op in {"contains", "starts_with"} and not isinstance(value, str):
        raise RuleError(_join(path, "value"), f"{op} needs a string")
    elif op in {"gt", "gte", "lt", "lte"} and (
        isinstance(value, bool)
        or not isinstance(value, int | float | str)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise RuleError(_join(path, "value"), f"{op} needs a number or an ISO date")
    return AttributeCond(name, op, value)


def parse_duration(raw: Any, path: str) -> timedelta:
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise RuleError(path, 'a duration is one of {"minutes": n}, {"hours": n}, {"days": n}')
    ((unit, amount),) = raw.items()
    if not isinstance(unit, str) or unit not in DURATION_UNITS:
        raise RuleError(_join(path, str(unit)), "unit must be minutes, hours or days")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise RuleError(_join(path, unit), "must be a number")
    if not 0 <= amount * DURATION_UNITS[unit] <= MAX_DURATION_S:
        raise RuleError(_join(path, unit), "must be between 0 and 100 years")
    return timedelta(seconds=amount * DURATION_UNITS[unit])


def _seen(raw: Any, which: Literal["first_seen", "last_seen"], path: str) -> SeenCond:
    if not isinstance(raw, Mapping):
        raise RuleError(path, "must be an object with op and ago")
    _only(raw, {"op", "ago"}, path)
    op = raw.get("op")
    if not isinstance(op, str) or op not in ("before", "after"):
        raise RuleError(_join(path, "op"), "must be before or after")
    direction: Literal["before", "after"] = "before" if op == "before" else "after"
    return SeenCond(which, direction, parse_duration(raw.get("ago"), _join(path, "ago")))


def _install(raw: Any, path: str) -> InstallCond:
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise RuleError(path, f"must name exactly one of {', '.join(INSTALL_FIELDS)}")
    ((name, value),) = raw.items()
    if name not in INSTALL_FIELDS:
        raise RuleError(_join(path, name), f"must be one of {', '.join(INSTALL_FIELDS)}")
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise RuleError(_join(path, name), "must be a string of 1 to 256 characters")
    return InstallCond(name, value)


def _compare(raw: Any, path: str, *, integer: bool) -> tuple[str, Any]:
    if not isinstance(raw, Mapping):
        raise RuleError(path, "must be an object with op and value")
    _only(raw, {"op", "value"}, path)
    op = raw.get("op")
    if not isinstance(op, str) or op not in COMPARE_OPS:
        raise RuleError(_join(path, "op"), f"must be one of {', '.join(COMPARE_OPS)}")
    value = raw.get("value")
    if integer:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            raise RuleError(_join(path, "value"), f"must be an integer from 0 to {MAX_COUNT}")
    elif (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or abs(value) > 1e18
    ):
        raise RuleError(_join(path, "value"), "must be a number")
    return op, value


def _window(raw: Mapping[str, Any], path: str) -> Window:
    if "within" in raw and "between" in raw:
        raise RuleError(_join(path, "between"), "use within or between, not both")
    if "within" in raw:
        return Window(within=parse_duration(raw["within"], _join(path, "within")))
    if "between" in raw:
        bpath = _join(path, "between")
        between = raw["between"]
        if not isinstance(between, Mapping):
            raise RuleError(bpath, 'must be {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}')
        _only(between, {"from", "to"}, bpath)
        bounds = []
        for end in ("from", "to"):
            value = between.get(end)
            try:
                if not isinstance(value, str) or len(value) != 10:
                    raise ValueError(value)
                bounds.append(date.fromisoformat(value))
            except ValueError:
                raise RuleError(_join(bpath, end), "must be a date YYYY-MM-DD") from None
        if bounds[0] > bounds[1]:
            raise RuleError(_join(bpath, "to"), "must not be before from")
        return Window(between=(bounds[0], bounds[1]))
    return Window()


def _event(raw: Mapping[str, Any], path: str) -> EventCond:
    _only(raw, {"event", "where", "count", "within", "between"}, path)
    name = raw["event"]
    if not isinstance(name, str) or not 0 < len(name) <= 128:
        raise RuleError(_join(path, "event"), "must be an event name of 1 to 128 characters")
    where: list[AttributeCond] = []
    if "where" in raw:
        wpath = _join(path, "where")
        filters = raw["where"]
        if not isinstance(filters, list) or not 0 < len(filters) <= MAX_WHERE:
            raise RuleError(wpath, f"must be a list of 1 to {MAX_WHERE} property filters")
        for i, item in enumerate(filters):
            ipath = _join(wpath, i)
            if not isinstance(item, Mapping) or "prop" not in item:
                raise RuleError(ipath, "must be an object with prop, op and value")
            where.append(_attribute(item, ipath, "prop"))
    count_op, count = "gte", 1
    if "count" in raw:
        count_op, count = _compare(raw["count"], _join(path, "count"), integer=True)
    window = _window(raw, path)
    cond = EventCond(name, tuple(where), count_op, count, window)
    if cond.exact:
        why = "a where filter" if where else "a window of minutes or hours"
        if window.within is None:
            raise RuleError(
                _join(path, "within"), f"{why} needs within (at most {RECENT_EVENTS_DAYS} days)"
            )
        if window.within > timedelta(days=RECENT_EVENTS_DAYS):
            raise RuleError(
                _join(path, "within"),
                f"{why} looks back at most {RECENT_EVENTS_DAYS} days (recent events)",
            )
    return cond


def _revenue(raw: Mapping[str, Any], path: str) -> RevenueCond:
    _only(raw, {"revenue", "within", "between"}, path)
    op, value = _compare(raw["revenue"], _join(path, "revenue"), integer=False)
    window = _window(raw, path)
    if not window.whole_days:
        raise RuleError(_join(path, "within"), "revenue windows are whole days")
    return RevenueCond(op, float(value), window)


def _number(raw: Mapping[str, Any], key: str, path: str, low: float, high: float) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RuleError(_join(path, key), f"must be a number from {low:g} to {high:g}")
    return float(value)


def _geofence(raw: Mapping[str, Any], path: str) -> GeofenceCond:
    _only(raw, {"geofence", "inside", "max_age"}, path)
    gpath = _join(path, "geofence")
    circle = raw["geofence"]
    if not isinstance(circle, Mapping):
        raise RuleError(gpath, "must be an object with lat, lon and radius_m")
    _only(circle, {"lat", "lon", "radius_m"}, gpath)
    # Coordinates are kept to 7 decimals (about 1 cm), like profile locations: no float
    # arithmetic on them can then underflow (Postgres raises on float8 underflow).
    lat = round(_number(circle, "lat", gpath, -90, 90), COORDINATE_DECIMALS)
    lon = round(_number(circle, "lon", gpath, -180, 180), COORDINATE_DECIMALS)
    radius = _number(circle, "radius_m", gpath, 0, MAX_RADIUS_M)
    inside = raw.get("inside", True)
    if not isinstance(inside, bool):
        raise RuleError(_join(path, "inside"), "must be true or false")
    if "max_age" not in raw:
        raise RuleError(_join(path, "max_age"), "is required (how old a location may be)")
    max_age = parse_duration(raw["max_age"], _join(path, "max_age"))
    return GeofenceCond(lat, lon, radius, inside, max_age)


def _rfm(raw: Any, path: str) -> RfmCond:
    if not isinstance(raw, Mapping) or not raw:
        raise RuleError(path, "must give at least one of r, f, m as [low, high]")
    _only(raw, {"r", "f", "m"}, path)
    ranges: dict[str, tuple[int, int] | None] = {"r": None, "f": None, "m": None}
    for key, value in raw.items():
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not 1 <= value[0] <= value[1] <= 5
        ):
            raise RuleError(_join(path, key), "must be [low, high] with 1 <= low <= high <= 5")
        ranges[key] = (value[0], value[1])
    return RfmCond(ranges["r"], ranges["f"], ranges["m"])


def walk(node: Node) -> Iterator[Node]:
    """Every node of the rule, depth first, the root first."""
    yield node
    if isinstance(node, All | AnyOf):
        for child in node.nodes:
            yield from walk(child)
    elif isinstance(node, Not):
        yield from walk(node.node)


def referenced_segments(node: Node) -> set[str]:
    return {n.segment_id for n in walk(node) if isinstance(n, SegmentCond)}


def _check_references(
    node: Node, resolver: Resolver, stack: list[str], done: dict[str, Node]
) -> None:
    for path, ref in _reference_paths(node, ""):
        if ref in stack:
            cycle = " -> ".join([*stack[stack.index(ref) :], ref])
            raise RuleError(path, f"segment references make a cycle: {cycle}")
        if ref in done:
            continue
        raw = resolver(ref)
        if raw is None:
            raise RuleError(path, f"no segment {ref!r}")
        try:
            target = _parse(raw, "", 0, [0])
            _check_references(target, resolver, [*stack, ref], done)
        except RuleError as exc:
            raise RuleError(path, f"segment {ref!r} is invalid: {exc}") from None
        done[ref] = target


def _reference_paths(node: Node, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, All | AnyOf):
        group = "all" if isinstance(node, All) else "any"
        for i, child in enumerate(node.nodes):
            yield from _reference_paths(child, _join(_join(path, group), i))
    elif isinstance(node, Not):
        yield from _reference_paths(node.node, _join(path, "not"))
    elif isinstance(node, SegmentCond):
        yield _join(path, "segment"), node.segment_id


def is_time_dependent(node: Node) -> bool:
    """True when the rule's answer can change with the clock alone (needs re-evaluation).
    A segment reference counts as time dependent: the referenced rule may be."""
    for n in walk(node):
        if isinstance(n, SeenCond | GeofenceCond | SegmentCond | RfmCond):
            return True
        if isinstance(n, AttributeCond) and n.op in RELATIVE_OPS:
            return True
        if isinstance(n, EventCond | RevenueCond) and n.window.within is not None:
            return True
        if isinstance(n, ReachableCond) and n.channel == "in_app":
            return True
    return False


def reads_counters(node: Node) -> bool:
    """True when answering the rule reads the user's daily counters (an event condition
    answered from them, or revenue): the loader reads them only then."""
    return any(
        isinstance(n, RevenueCond) or (isinstance(n, EventCond) and not n.exact) for n in walk(node)
    )


def reads_recent(node: Node) -> bool:
    """True when answering the rule reads the user's recent events (an event condition
    with ``where`` filters or a window of minutes or hours)."""
    return any(isinstance(n, EventCond) and n.exact for n in walk(node))
