"""The in-memory evaluator of the segment rule language: ``evaluate`` answers a parsed rule
(``libs.rules.language``) for one user (``libs.rules.profile.ProfileView``). Pure and
total: time and app context come in as values, and a parsed rule never raises.

Callers: the segmenter (real-time consumer and scheduler decide memberships with it) and
the journey service (a condition node asks a rule of one profile). ``libs.rules.sql``
turns the same rules into SQL and must agree with ``evaluate`` on every input (a
hypothesis test against Postgres proves it); change both together. What both compute
from the rule and the clock alone (cut-offs, day windows, dates, RFM context) lives in
``libs.rules.semantics``.

RFM (recency, frequency, monetary), per app:

- recency = time since ``last_seen``; frequency = ``sessions``; monetary = ``revenue``.
- Thresholds are the 20/40/60/80th percentiles of each over the app's profiles, linearly
  interpolated (Postgres ``percentile_cont``; ``quintile_thresholds`` here), recency in
  days and only over profiles with a ``last_seen``. They are computed per app
  (``libs.rules.sql.rfm_thresholds``) and passed into both evaluators as
  ``RfmThresholds``.
- f = 1 + #{thresholds t : sessions > t}; m = 1 + #{t : revenue > t};
  r = 5 − #{t : last_seen < now − t days} (the most recent users score 5); a profile
  that was never seen scores r = 1. Without thresholds no one matches an rfm condition.
- Computing thresholds scans every profile of the app, so a caller deciding many users
  keeps them per app in an ``RfmCache`` for ``RFM_TTL`` (5 minutes) instead of
  recomputing them per batch. Staleness bound: a decision uses thresholds at most
  ``RFM_TTL`` old — recency cut-offs are then at most that much off (minutes, on a scale
  of days), frequency and monetary cut-offs off by however much the app's quintiles
  moved meanwhile. rfm conditions are time dependent, so the segmenter's scheduler
  re-evaluates them every tick with freshly computed thresholds and corrects any
  membership decided with stale ones within one interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from libs.rules.language import (
    All,
    AnyOf,
    AttributeCond,
    EventCond,
    GeofenceCond,
    InstallCond,
    Node,
    Not,
    ReachableCond,
    RevenueCond,
    RfmCond,
    SeenCond,
    SegmentCond,
)
from libs.rules.profile import ProfileState, ProfileView, as_view
from libs.rules.semantics import (
    DEG,
    EARTH_RADIUS_M,
    IN_APP_WINDOW,
    NO_CONTEXT,
    Context,
    RfmThresholds,
    ago,
    as_date,
    day_range,
    recency_cuts,
)

RFM_TTL = timedelta(minutes=5)


def evaluate(
    node: Node,
    profile: ProfileState | ProfileView,
    now: datetime,
    context: Context = NO_CONTEXT,
) -> bool:
    """Answer ``node`` for one user. Pure and total: never raises for a parsed rule."""
    return _eval(node, as_view(profile), now, context)


def _eval(node: Node, view: ProfileView, now: datetime, ctx: Context) -> bool:
    return _EVALUATORS[type(node)](node, view, now, ctx)


def _all(node: Any, view: ProfileView, now: datetime, ctx: Context) -> bool:
    return all(_eval(n, view, now, ctx) for n in node.nodes)


def _any(node: Any, view: ProfileView, now: datetime, ctx: Context) -> bool:
    return any(_eval(n, view, now, ctx) for n in node.nodes)


def _not(node: Any, view: ProfileView, now: datetime, ctx: Context) -> bool:
    return not _eval(node.node, view, now, ctx)


def _seen(node: SeenCond, view: ProfileView, now: datetime, ctx: Context) -> bool:
    state = view.state
    seen = state.first_seen if node.which == "first_seen" else state.last_seen
    if seen is None:
        return False
    threshold = ago(now, node.ago)
    if threshold is None:
        return node.op == "after"
    return seen < threshold if node.op == "before" else seen >= threshold


def _install(node: InstallCond, view: ProfileView, now: datetime, ctx: Context) -> bool:
    attribution = view.state.attribution or {}
    if attribution.get("status") == "rejected":  # never attributed: it names no source
        return False
    key = "tracker_token" if node.field == "tracker" else node.field
    return _same(attribution.get(key), node.value)


def _attribute_node(node: AttributeCond, view: ProfileView, now: datetime, ctx: Context) -> bool:
    return match_attribute(node, view.state.attributes, now)


def event_count(node: EventCond, view: ProfileView, now: datetime) -> int:
    if node.exact:
        assert node.window.within is not None  # the parser guarantees it
        start = now - node.window.within
        return sum(
            1
            for e in view.recent
            if e.name == node.name
            and e.ts >= start
            and all(match_attribute(f, e.props, now) for f in node.where)
        )
    low, high = day_range(node.window, now)
    return sum(
        c.count
        for c in view.counters
        if c.name == node.name and (low is None or c.day >= low) and (high is None or c.day <= high)
    )


def revenue_sum(node: RevenueCond, view: ProfileView, now: datetime) -> float:
    low, high = day_range(node.window, now)
    return sum(
        (
            c.revenue
            for c in view.counters
            if (low is None or c.day >= low) and (high is None or c.day <= high)
        ),
        0.0,
    )


def _event(node: EventCond, view: ProfileView, now: datetime, ctx: Context) -> bool:
    return compare(node.count_op, event_count(node, view, now), node.count)


def _revenue(node: RevenueCond, view: ProfileView, now: datetime, ctx: Context) -> bool:
    return compare(node.op, revenue_sum(node, view, now), node.value)


def compare(op: str, left: Any, right: Any) -> bool:
    match op:
        case "eq":
            return bool(left == right)
        case "ne":
            return bool(left != right)
        case "gt":
            return bool(left > right)
        case "gte":
            return bool(left >= right)
        case "lt":
            return bool(left < right)
        case _:
            return bool(left <= right)


def has_valid(entries: list[dict[str, Any]]) -> bool:
    return any(isinstance(e, dict) and e.get("valid") is True for e in entries)


def _reachable(node: ReachableCond, view: ProfileView, now: datetime, ctx: Context) -> bool:
    state = view.state
    if node.channel in state.opt_outs:
        return False
    match node.channel:
        case "push":
            return state.push_permission is True and has_valid(state.push_tokens)
        case "sms":
            return bool(state.phone)
        case "email":
            return bool(state.email)
        case "web_push":
            return has_valid(state.web_push)
    cut = now - IN_APP_WINDOW
    return state.last_seen is not None and state.last_seen >= cut


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres. The SQL compiler spells the same arithmetic in the
    same order, so both evaluators round alike."""
    s_lat = math.sin((lat2 - lat1) * DEG / 2.0)
    s_lon = math.sin((lon2 - lon1) * DEG / 2.0)
    a = s_lat * s_lat + math.cos(lat1 * DEG) * math.cos(lat2 * DEG) * (s_lon * s_lon)
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def _geofence(node: GeofenceCond, view: ProfileView, now: datetime, ctx: Context) -> bool:
    state = view.state
    if state.last_lat is None or state.last_lon is None or state.last_location_at is None:
        return False
    cut = ago(now, node.max_age)
    if cut is not None and state.last_location_at < cut:
        return False
    distance = haversine_m(node.lat, node.lon, state.last_lat, state.last_lon)
    return distance <= node.radius_m if node.inside else distance > node.radius_m


def _segment(node: SegmentCond, view: ProfileView, now: datetime, ctx: Context) -> bool:
    return node.segment_id in view.segments


def rfm_scores(state: ProfileState, now: datetime, thresholds: RfmThresholds) -> tuple[int, ...]:
    if state.last_seen is None:
        r = 1
    else:
        seen = state.last_seen
        r = 5 - sum(1 for cut in recency_cuts(now, thresholds) if cut is not None and seen < cut)
    f = 1 + sum(1 for t in thresholds.frequency if state.sessions > t)
    m = 1 + sum(1 for t in thresholds.monetary if state.revenue > t)
    return r, f, m


def _rfm(node: RfmCond, view: ProfileView, now: datetime, ctx: Context) -> bool:
    if ctx.rfm is None:
        return False
    scores = rfm_scores(view.state, now, ctx.rfm)
    for bounds, score in zip((node.r, node.f, node.m), scores, strict=True):
        if bounds is not None and not bounds[0] <= score <= bounds[1]:
            return False
    return True


class RfmCache:
    """Each app's RFM thresholds, reused for ``ttl`` after they were computed (see the
    staleness bound in the module docstring). Time comes in as ``now`` (the caller's
    clock); an entry stamped later than ``now`` (the clock went back) counts as expired.
    Not thread-safe; one per consumer. Holds one entry per app seen."""

    def __init__(self, ttl: timedelta = RFM_TTL) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[datetime, RfmThresholds]] = {}

    def get(self, app_id: str, now: datetime) -> RfmThresholds | None:
        """The app's thresholds if computed less than ``ttl`` before ``now``, else None."""
        entry = self._entries.get(app_id)
        if entry is None:
            return None
        at, thresholds = entry
        if not at <= now < at + self._ttl:
            del self._entries[app_id]
            return None
        return thresholds

    def put(self, app_id: str, thresholds: RfmThresholds, now: datetime) -> None:
        """Keep ``thresholds``, computed at ``now``, for the app (replacing any older)."""
        self._entries[app_id] = (now, thresholds)


def quintile_thresholds(values: Iterable[float]) -> tuple[float, ...]:
    """The 20/40/60/80th percentiles with linear interpolation (``percentile_cont``)."""
    ordered = sorted(values)
    if not ordered:
        return ()
    cuts = []
    for p in (0.2, 0.4, 0.6, 0.8):
        pos = p * (len(ordered) - 1)
        low = math.floor(pos)
        high = min(low + 1, len(ordered) - 1)
        cuts.append(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))
    return tuple(cuts)


def match_attribute(cond: AttributeCond, attributes: Mapping[str, Any], now: datetime) -> bool:
    """One attribute (or event prop) condition. A missing or null value matches only
    ``ne``, ``not_in`` and ``not_exists``."""
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
        case "before" | "after":
            when = as_date(actual) if isinstance(actual, str) else None
            if when is None:
                return False
            cut = ago(now, expected)
            if cut is None:
                return cond.op == "after"
            return when < cut if cond.op == "before" else when >= cut
    left, right = _comparable(actual, expected)
    if left is None or right is None:
        return False
    return compare(cond.op, left, right)


def _same(left: Any, right: Any) -> bool:
    """JSON equality (as Postgres compares JSONB): ``true`` is not ``1``, at any depth."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        if len(left) != len(right):
            return False
        return all(_same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict | list | tuple) or isinstance(right, dict | list | tuple):
        return False
    return bool(left == right)


def _comparable(actual: Any, expected: Any) -> tuple[Any, Any]:
    """Numbers compare as numbers; ISO dates as dates; anything else does not compare."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return None, None
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual, expected
    if isinstance(actual, str) and isinstance(expected, str):
        return as_date(actual), as_date(expected)
    return None, None


_EVALUATORS: dict[type, Callable[[Any, ProfileView, datetime, Context], bool]] = {
    All: _all,
    AnyOf: _any,
    Not: _not,
    AttributeCond: _attribute_node,
    SeenCond: _seen,
    InstallCond: _install,
    EventCond: _event,
    RevenueCond: _revenue,
    ReachableCond: _reachable,
    GeofenceCond: _geofence,
    SegmentCond: _segment,
    RfmCond: _rfm,
}
