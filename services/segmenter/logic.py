"""Profile folding and segment evaluation. Pure: time and app context come in as values.

``apply_event`` folds one event into a profile state (merging two profiles when a
device logs in is ``identity.py``); ``evaluate`` answers a parsed segment rule
(``libs.schemas.rules``) for one ``ProfileView``; ``membership_changes`` diffs the
answers against the stored memberships. ``libs.segments.sql`` turns the same rules into
SQL and must agree with ``evaluate`` on every input (a hypothesis test against Postgres
proves it); change both together. What both compute from the rule and the clock alone
(cut-offs, day windows, dates, RFM context) lives in ``libs.segments.semantics``.

RFM (recency, frequency, monetary), per app:

- recency = time since ``last_seen``; frequency = ``sessions``; monetary = ``revenue``.
- Thresholds are the 20/40/60/80th percentiles of each over the app's profiles, linearly
  interpolated (Postgres ``percentile_cont``; ``quintile_thresholds`` here), recency in
  days and only over profiles with a ``last_seen``. They are computed per app
  (``libs.segments.sql.rfm_thresholds``) and passed into both evaluators as
  ``RfmThresholds``.
- f = 1 + #{thresholds t : sessions > t}; m = 1 + #{t : revenue > t};
  r = 5 − #{t : last_seen < now − t days} (the most recent users score 5); a profile
  that was never seen scores r = 1. Without thresholds no one matches an rfm condition.
- Computing thresholds scans every profile of the app, so the real-time consumer keeps
  them per app in an ``RfmCache`` for ``RFM_TTL`` (5 minutes) instead of recomputing
  them per batch. Staleness bound: a real-time decision uses thresholds at most
  ``RFM_TTL`` old — recency cut-offs are then at most that much off (minutes, on a scale
  of days), frequency and monetary cut-offs off by however much the app's quintiles
  moved meanwhile. rfm conditions are time dependent, so the scheduler re-evaluates
  them every tick with freshly computed thresholds and corrects any membership decided
  with stale ones within one interval.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from libs.schemas import Event, UserAttributed
from libs.schemas.rules import (
    CHANNELS,
    COORDINATE_DECIMALS,
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
    referenced_segments,
)
from libs.segments.semantics import (
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

CHANGE_NS = uuid.UUID("a3d7c0de-51e5-4c5b-9a43-0f0c6b8f7c11")
MAX_ATTRIBUTES = 200
MAX_TOKENS = 20
MAX_CONTACT = 256
# One event's share of a daily revenue counter is clamped to this, so that no sequence of
# events can overflow the counter's float8 sum in Postgres (which raises, not saturates).
MAX_EVENT_REVENUE = 1e18
PUSH_PROVIDERS = frozenset({"fcm", "apns", "webpush"})
RFM_TTL = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ProfileState:
    user_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # name → [ISO time, op] of the attribute's latest write (op: set, once, inc, unset);
    # an unset attribute keeps its entry (a tombstone) so that an older write arriving
    # later cannot bring it back. See ``fold_attributes``.
    attribute_writes: dict[str, list[str]] = field(default_factory=dict)
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
    push_permission: bool | None = None
    # [{"device_id", "token", "provider", "valid", "updated_at"}]
    push_tokens: list[dict[str, Any]] = field(default_factory=list)
    phone: str | None = None
    email: str | None = None
    # [{"device_id", "token", "valid", "updated_at"}]
    web_push: list[dict[str, Any]] = field(default_factory=list)
    opt_outs: list[str] = field(default_factory=list)
    last_lat: float | None = None
    last_lon: float | None = None
    last_location_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DailyCount:
    """One row of ``segmenter_daily_counters`` for this user."""

    name: str
    day: date
    count: int
    revenue: float = 0.0


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """One row of ``segmenter_recent_events`` (for ``where`` filters and sub-day windows)."""

    name: str
    ts: datetime
    props: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProfileView:
    """What evaluation sees of one user: the profile, its counters and recent events, and
    the segments it is a member of."""

    state: ProfileState
    counters: tuple[DailyCount, ...] = ()
    recent: tuple[RecentEvent, ...] = ()
    segments: Set[str] = frozenset()


# --- folding ------------------------------------------------------------------------------


def apply_event(state: ProfileState, event: Event) -> ProfileState:
    """Fold ``event`` in. Out-of-order safe: an older event never moves ``last_seen``
    back nor overwrites fields set by a newer one (device fields, permission and
    opt-outs by ``last_seen``; attributes, phone and email by each attribute's own
    write time; location and tokens by their own times). Malformed props of reserved
    events are ignored.

    An event with ``source="admin"`` (a profile edit from admin's API) is not activity:
    it changes what it says and nothing else — not the event count, ``first_seen``,
    ``last_seen`` nor the device fields."""
    newer = state.last_seen is None or event.ts >= state.last_seen
    changes: dict[str, Any] = {"user_id": state.user_id or event.user_id}
    if is_activity(event):
        changes.update(
            events=state.events + 1,
            first_seen=min(filter(None, (state.first_seen, event.ts))),
            last_seen=max(filter(None, (state.last_seen, event.ts))),
        )
        if newer:
            for name in DEVICE_FIELDS:
                value = getattr(event, name)
                if value is not None:
                    changes[name] = value
    props = event.props
    match event.name:
        case "$open":
            changes["sessions"] = state.sessions + 1
        case "$purchase":
            changes["purchases"] = state.purchases + 1
            changes["revenue"] = _finite_sum(state.revenue, event.revenue or 0.0)
        case "$attributes":
            attrs, writes, written = fold_attributes(
                state.attributes, state.attribute_writes, props, event.ts
            )
            changes["attributes"], changes["attribute_writes"] = attrs, writes
            for name in CONTACT_FIELDS:
                if name not in written:
                    continue
                if name not in attrs:
                    changes[name] = None  # unset
                elif _is_contact(attrs[name]):
                    changes[name] = attrs[name]
        case "$push_token":
            changes.update(_push_token(state, event))
        case "$push_permission":
            if newer and isinstance(props.get("granted"), bool):
                changes["push_permission"] = props["granted"]
        case "$location":
            changes.update(_location(state, event))
        case "$opt_out" | "$opt_in":
            channel = props.get("channel")
            if newer and isinstance(channel, str) and channel in CHANNELS:
                outs = set(state.opt_outs)
                if event.name == "$opt_out":
                    outs.add(channel)
                else:
                    outs.discard(channel)
                changes["opt_outs"] = sorted(outs)
    return replace(state, **changes)


DEVICE_FIELDS = ("platform", "app_version", "os_version", "device_model", "locale", "timezone")
# Attributes that are also the profile's contact fields (the dispatcher's addresses).
CONTACT_FIELDS = ("phone", "email")


def is_activity(event: Event) -> bool:
    """Whether ``event`` is something the user did: every event but admin's profile
    edits and journeys' attribute writes, which are neither counted nor make the user
    seen."""
    return event.source not in ("admin", "journey")


def _is_contact(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CONTACT


def _push_token(state: ProfileState, event: Event) -> dict[str, Any]:
    token, provider = event.props.get("token"), event.props.get("provider")
    if not isinstance(token, str) or not 0 < len(token) <= 4096:
        return {}
    if not isinstance(provider, str) or provider not in PUSH_PROVIDERS:
        return {}
    entry: dict[str, Any] = {"device_id": event.device_id, "token": token}
    if provider != "webpush":
        entry["provider"] = provider
    entry.update(valid=True, updated_at=event.ts.isoformat())
    target = "web_push" if provider == "webpush" else "push_tokens"
    current: list[dict[str, Any]] = getattr(state, target)
    kept = []
    for old in current:
        same = old.get("device_id") == event.device_id and old.get("provider") == entry.get(
            "provider"
        )
        if same:
            when = as_date(old["updated_at"]) if isinstance(old.get("updated_at"), str) else None
            if when is not None and when > event.ts:
                return {}  # a newer token of this device is already known
            continue
        kept.append(old)
    return {target: [*kept, entry][-MAX_TOKENS:]}


def _location(state: ProfileState, event: Event) -> dict[str, Any]:
    lat, lon = event.props.get("lat"), event.props.get("lon")
    if not (_is_number(lat) and _is_number(lon)):
        return {}
    # ~1 cm, as in geofence rules: keeps the SQL twin's float8 arithmetic from underflowing.
    lat = round(float(lat), COORDINATE_DECIMALS)  # type: ignore[arg-type]
    lon = round(float(lon), COORDINATE_DECIMALS)  # type: ignore[arg-type]
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return {}
    if state.last_location_at is not None and event.ts < state.last_location_at:
        return {}
    return {"last_lat": lat, "last_lon": lon, "last_location_at": event.ts}


WriteOp = str  # "set" | "once" | "inc" | "unset"


def write_mark(writes: Mapping[str, Any], name: str) -> tuple[datetime | None, WriteOp | None]:
    """(time, op) of the latest write of attribute ``name``; (None, None) when unknown
    (never written, or written before write times were kept: older than any time)."""
    mark = writes.get(name)
    if not isinstance(mark, list | tuple) or len(mark) != 2 or not isinstance(mark[0], str):
        return None, None
    try:
        at = datetime.fromisoformat(mark[0])
    except ValueError:
        return None, None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at, str(mark[1])


def fold_attributes(
    current: dict[str, Any],
    writes: dict[str, list[str]],
    props: dict[str, Any],
    ts: datetime,
) -> tuple[dict[str, Any], dict[str, list[str]], set[str]]:
    """Apply ``$attributes`` props written at ``ts``; returns the attributes, their write
    marks and the names this call wrote. Per attribute, so that events may arrive in
    any order:

    - ``set`` applies unless a later write is known — except a ``set_once`` value, which
      any ``set`` replaces (``set_once`` only fills a missing attribute, so had the
      ``set`` arrived first the ``set_once`` would not have applied);
    - ``set_once`` fills a missing attribute unless it was unset later, and replaces a
      value another ``set_once`` wrote later (the earliest ``set_once`` wins);
    - ``increment`` adds (from 0, or over a non-number) unless a later ``set`` or
      ``unset`` absorbed it;
    - ``unset`` removes unless a later write is known, and leaves a tombstone.

    Ties count as later (a later event with the same time wins, as ``apply_event``'s
    device fields). Increments interleaved out of order with a ``set`` of the same
    attribute cannot all be placed without the full history and may be lost. At most
    ``MAX_ATTRIBUTES`` attributes are kept (existing ones first) and as many tombstones
    (newest first)."""
    attrs = dict(current)
    marks = dict(writes)
    written: set[str] = set()

    def mark(name: str, op: WriteOp) -> None:
        marks[name] = [ts.isoformat(), op]
        written.add(name)

    for name, value in _mapping(props.get("set")).items():
        at, op = write_mark(marks, name)
        if at is None or ts >= at or op == "once":
            attrs[name] = value
            mark(name, "set")
    for name, value in _mapping(props.get("set_once")).items():
        at, op = write_mark(marks, name)
        if name in attrs:
            if op == "once" and at is not None and ts < at:
                attrs[name] = value
                mark(name, "once")
        elif at is None or ts >= at:
            attrs[name] = value
            mark(name, "once")
    for name, value in _mapping(props.get("increment")).items():
        if not _is_number(value):
            continue
        at, op = write_mark(marks, name)
        if at is not None and ts < at and op != "inc":
            continue
        base = attrs.get(name, 0)
        attrs[name] = _finite_sum(base if _is_number(base) else 0, value)
        if at is None or ts >= at:
            mark(name, "inc")
        else:
            written.add(name)
    unset = props.get("unset")
    for name in unset if isinstance(unset, list) else []:
        if not isinstance(name, str):
            continue
        at, _ = write_mark(marks, name)
        if at is None or ts >= at:
            attrs.pop(name, None)
            mark(name, "unset")
    if len(attrs) > MAX_ATTRIBUTES:
        attrs = dict(list(attrs.items())[:MAX_ATTRIBUTES])
    return attrs, bounded_marks(attrs, marks), written & (set(attrs) | set(_tombstones(marks)))


def _tombstones(marks: Mapping[str, Any]) -> list[str]:
    """Names whose latest write was an unset, in the marks' order (oldest mark first)."""
    return [name for name in marks if write_mark(marks, name)[1] == "unset"]


def bounded_marks(attrs: Mapping[str, Any], marks: Mapping[str, Any]) -> dict[str, list[str]]:
    """The marks of ``attrs`` and the newest ``MAX_ATTRIBUTES`` tombstones; a mark of an
    attribute that is neither (dropped by the cap) goes."""
    kept = {name: list(marks[name]) for name in marks if name in attrs}
    tombs = [n for n in _tombstones(marks) if n not in attrs]
    # Stable: among tombstones of one time, the later written stay.
    tombs.sort(key=lambda n: write_mark(marks, n)[0] or datetime.min.replace(tzinfo=UTC))
    for name in tombs[-MAX_ATTRIBUTES:]:
        kept[name] = list(marks[name])
    return kept


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
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def daily_counts(events: Iterable[Event]) -> list[DailyCount]:
    """The counter increments of ``events`` (first sightings only), one per (name, UTC day)."""
    totals: dict[tuple[str, date], tuple[int, float]] = {}
    for event in events:
        key = (event.name, event.ts.astimezone(UTC).date())
        count, revenue = totals.get(key, (0, 0.0))
        amount = max(-MAX_EVENT_REVENUE, min(MAX_EVENT_REVENUE, float(event.revenue or 0.0)))
        totals[key] = (count + 1, revenue + amount)
    return [DailyCount(name, day, c, r) for (name, day), (c, r) in sorted(totals.items())]


def apply_attribution(state: ProfileState, attributed: UserAttributed) -> ProfileState:
    """The profile keeps the attribution of its first counted install, upgraded (organic →
    a tracker) when a late click matches that same install. An install rejected as fraud
    gives way to an honest one: it was never counted, so it does not make the device's
    later install a second one."""
    current = state.attribution
    if current is not None and current.get("install_event_id") != attributed.install_event_id:
        if current.get("status") != "rejected" or attributed.status == "rejected":
            return state
        current = None
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


# --- evaluation ---------------------------------------------------------------------------


def as_view(profile: ProfileState | ProfileView) -> ProfileView:
    return profile if isinstance(profile, ProfileView) else ProfileView(profile)


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


# --- memberships --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    segment_id: str
    change: str  # entered | exited
    change_id: str


def rule_fingerprint(raw: Any) -> str:
    """A stable digest of a stored rule's JSON (key order ignored): the scheduler compares
    it with the one it last reconciled memberships with, to notice a new or changed rule."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def dependency_order(segments: Mapping[str, Node]) -> list[str]:
    """Segment ids so that a segment comes after the segments (of ``segments``) it
    references; ties by id. Stored rules have no cycles (validated on write); should one
    slip in, its members are taken in id order. Walks every rule once: a caller deciding
    many users against the same segments computes it once (``membership_changes(order=)``)."""
    refs = {s: (referenced_segments(rule) - {s}) & segments.keys() for s, rule in segments.items()}
    order: list[str] = []
    placed: set[str] = set()
    remaining = sorted(segments)
    while remaining:
        ready = [s for s in remaining if refs[s] <= placed]
        for s in ready or remaining[:1]:
            order.append(s)
            placed.add(s)
        remaining = [s for s in remaining if s not in placed]
    return order


def membership_changes(
    *,
    app_id: str,
    user_key: str,
    segments: Mapping[str, Node],
    current: set[str],
    state: ProfileState | ProfileView,
    now: datetime,
    cause: str,
    context: Context = NO_CONTEXT,
    order: Sequence[str] | None = None,
) -> list[Change]:
    """What entering/exiting ``state`` implies for the ``segments`` (id → rule), given the
    ids it is ``current``ly a member of. Segments referencing others see the new answers
    of those (evaluated first). Ids are deterministic in ``cause`` (an event id), so
    re-deciding the same cause yields the same change ids. Sorted by segment id.

    ``order`` is ``dependency_order(segments)`` when the caller already has it (it must
    be exactly that); otherwise it is computed here."""
    member = set(current)
    # One view for every segment: its ``segments`` is ``member`` itself, so each rule
    # sees the answers decided before it.
    view = replace(as_view(state), segments=member)
    changes = []
    for segment_id in dependency_order(segments) if order is None else order:
        inside = _eval(segments[segment_id], view, now, context)
        was = segment_id in current
        if inside:
            member.add(segment_id)
        else:
            member.discard(segment_id)
        if inside != was:
            kind = "entered" if inside else "exited"
            changes.append(
                Change(segment_id, kind, change_id(app_id, user_key, segment_id, kind, cause))
            )
    return sorted(changes, key=lambda c: c.segment_id)


def change_id(app_id: str, user_key: str, segment_id: str, change: str, cause: str) -> str:
    """The id of a membership change: deterministic in what changed and its cause (an
    event, attribution or erasure id), so a redelivered cause yields the same id."""
    return uuid.uuid5(CHANGE_NS, json.dumps([app_id, user_key, segment_id, change, cause])).hex
