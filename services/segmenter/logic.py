"""Profile folding and membership decisions. Pure: time and app context come in as values.

``apply_event`` folds one event into a profile state (merging two profiles when a
device logs in is ``identity.py``); ``membership_changes`` answers the app's segment
rules for one user with the rule language's evaluator (``libs.rules.evaluation``) and
diffs the answers against the stored memberships.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from libs.rules.evaluation import evaluate
from libs.rules.language import CHANNELS, COORDINATE_DECIMALS, Node, referenced_segments
from libs.rules.profile import DailyCount, ProfileState, ProfileView, as_view
from libs.rules.semantics import NO_CONTEXT, Context, as_date
from libs.schemas import Event, UserAttributed

CHANGE_NS = uuid.UUID("a3d7c0de-51e5-4c5b-9a43-0f0c6b8f7c11")
MAX_ATTRIBUTES = 200
MAX_TOKENS = 20
MAX_CONTACT = 256
# One event's share of a daily revenue counter is clamped to this, so that no sequence of
# events can overflow the counter's float8 sum in Postgres (which raises, not saturates).
MAX_EVENT_REVENUE = 1e18
PUSH_PROVIDERS = frozenset({"fcm", "apns", "webpush"})

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
        inside = evaluate(segments[segment_id], view, now, context)
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
