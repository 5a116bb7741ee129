"""The segment rule language (a public contract: marketers and backends write it by hand).

```
node      := {"all": [node, ...]} | {"any": [node, ...]} | {"not": node} | condition
condition := {"attribute": "city", "op": "eq", "value": "Tehran"}
           | {"first_seen": {"op": "after", "ago": {"hours": 24}}}     (also last_seen)
           | {"install": {"tracker": "TOKEN"}}     (or network, campaign, channel)
```

``parse_rule`` validates the JSON and returns frozen nodes; a bad node raises
``RuleError`` naming its path (``all.1.op``). Pure: no I/O, no clock — evaluation takes
``now`` from the caller. This is the foundation subset; the segments issue extends it
(events, revenue, reachability, geofence, segment membership, RFM).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

MAX_DEPTH = 8
MAX_NODES = 200
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
VALUELESS_OPS = frozenset({"exists", "not_exists"})
DURATION_UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
MAX_DURATION_S = 100 * 366 * 86400
INSTALL_FIELDS = ("tracker", "network", "campaign", "channel")


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
    field: str
    value: str


Node = All | AnyOf | Not | AttributeCond | SeenCond | InstallCond


def parse_rule(raw: Any) -> Node:
    """Validate rule JSON; raises ``RuleError`` with the path of the first bad node."""
    counter = [0]
    return _parse(raw, "", 0, counter)


def _join(path: str, part: str | int) -> str:
    return f"{path}.{part}" if path else str(part)


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
        return _attribute(raw, path)
    for which in ("first_seen", "last_seen"):
        if which in raw:
            _only(raw, {which}, path)
            return _seen(raw[which], which, _join(path, which))
    if "install" in raw:
        _only(raw, {"install"}, path)
        return _install(raw["install"], _join(path, "install"))
    raise RuleError(
        path, "unknown node; expected all, any, not, attribute, first_seen, last_seen or install"
    )


def _only(raw: Mapping[str, Any], allowed: set[str], path: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise RuleError(_join(path, extra[0]), "unexpected key")


def _attribute(raw: Mapping[str, Any], path: str) -> AttributeCond:
    _only(raw, {"attribute", "op", "value"}, path)
    name = raw["attribute"]
    if not isinstance(name, str) or not 0 < len(name) <= 128:
        raise RuleError(_join(path, "attribute"), "must be a name of 1 to 128 characters")
    op = raw.get("op")
    if not isinstance(op, str) or op not in ATTRIBUTE_OPS:
        raise RuleError(_join(path, "op"), f"must be one of {', '.join(sorted(ATTRIBUTE_OPS))}")
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
        isinstance(value, bool) or not isinstance(value, int | float | str)
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


def is_time_dependent(node: Node) -> bool:
    """True when the rule's answer can change with the clock alone (needs re-evaluation)."""
    if isinstance(node, All | AnyOf):
        return any(is_time_dependent(n) for n in node.nodes)
    if isinstance(node, Not):
        return is_time_dependent(node.node)
    return isinstance(node, SeenCond)
