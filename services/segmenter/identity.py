"""Who a record belongs to, and what a login does to profiles. Pure (beside ``logic.py``).

Identity, as the segmenter keeps it:

- A device's alias names the profile its records fold into: ``d:<device_id>`` until the
  device is linked to a user, then the user. Any event that carries both a
  ``device_id`` and a ``user_id`` links them (``$identify`` is the SDK's way to say
  so); the link with the newest event time wins, so an older event arriving late does
  not move a device.
- A record without a ``user_id`` (an SDK event sent before or after login, a late
  attribution of the device's install) folds into whatever its device's alias names;
  records with a ``user_id`` fold into that user.
- When a device that had no user is linked to user U, its anonymous profile is merged
  into U's (``merge_profiles``) and deleted; the device's records of the same batch that
  came before the link fold into U directly (they would have been merged anyway).
- The merged profile's memberships leave with it (exits announced); U enters what it
  now matches, and an entry into a segment the anonymous profile was in says so
  (``SegmentChanged.merged_from``, ``mark_carried``): the user is not new to it.
- When a device that belonged to user U1 is linked to U2 (a shared phone), only the
  alias moves: nothing is merged, U1 keeps its history, and from then on the device's
  anonymous records fold into U2.

A device is never unlinked (there is no logout event): its anonymous records keep
folding into its last user until another user logs in on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from libs.rules.profile import ProfileState
from libs.schemas import SegmentChanged
from libs.schemas.base import ANONYMOUS_PREFIX
from services.segmenter.logic import (
    CONTACT_FIELDS,
    DEVICE_FIELDS,
    MAX_ATTRIBUTES,
    MAX_TOKENS,
    _finite_sum,
    bounded_marks,
    write_mark,
)

# --- routing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alias:
    """A device's profile key, and the newest event time that linked it to that user
    (None for an anonymous alias, and for links made before times were kept)."""

    user_key: str
    linked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Sighting:
    """What routing needs of one record: its ids, time, and whether it is seen for the
    first time. Only first sightings change aliases (an event naming a device and a
    user links them; a device's first record gives it its anonymous alias): a replay
    changes nothing."""

    device_id: str | None
    user_id: str | None
    ts: datetime
    cause: str
    fresh: bool = True


@dataclass(frozen=True, slots=True)
class Link:
    """``device_id`` now belongs to ``user_key``; ``previous`` is the key it had (None:
    no alias yet). A link from no user (``merges``) merges the anonymous profile."""

    device_id: str
    user_key: str
    previous: str | None
    linked_at: datetime
    cause: str

    @property
    def merges(self) -> bool:
        return self.previous is None or is_anonymous(self.previous)

    @property
    def anonymous_key(self) -> str:
        return anonymous_key(self.device_id)


@dataclass(frozen=True, slots=True)
class Routing:
    """``targets[i]`` is the profile key record ``i`` folds into; ``links`` are the
    device links the batch makes, in order; ``aliases`` the device aliases to store
    (only those that changed)."""

    targets: list[str]
    links: list[Link]
    aliases: dict[str, Alias]


def is_anonymous(user_key: str) -> bool:
    return user_key.startswith(ANONYMOUS_PREFIX)


def anonymous_key(device_id: str) -> str:
    return ANONYMOUS_PREFIX + device_id


def route(sightings: Sequence[Sighting], aliases: Mapping[str, Alias]) -> Routing:
    """Decide the profile of every record of one app's batch, in record order, from the
    aliases stored before the batch (device id → alias) — the rules of this module's
    docstring. Deterministic: the same batch and aliases give the same answer."""
    current = dict(aliases)
    targets: list[str] = []
    links: list[Link] = []
    changed: dict[str, Alias] = {}
    # Anonymous sightings of a device that has no user yet, waiting to learn whether a
    # later record of the batch links it (then they fold into that user).
    waiting: dict[str, list[int]] = {}
    for i, s in enumerate(sightings):
        if s.user_id is not None:
            targets.append(s.user_id)
            if s.device_id is None or not s.fresh:
                continue
            known = current.get(s.device_id)
            if known is not None and known.user_key == s.user_id:
                if known.linked_at is None or s.ts > known.linked_at:
                    current[s.device_id] = changed[s.device_id] = Alias(s.user_id, s.ts)
                continue
            if (
                known is None
                or is_anonymous(known.user_key)
                or known.linked_at is None
                or s.ts >= known.linked_at
            ):
                link = Link(
                    s.device_id,
                    s.user_id,
                    known.user_key if known else None,
                    s.ts,
                    s.cause,
                )
                links.append(link)
                current[s.device_id] = changed[s.device_id] = Alias(s.user_id, s.ts)
                if link.merges:
                    for j in waiting.pop(s.device_id, []):
                        targets[j] = s.user_id
            continue
        if s.device_id is None:  # the contract forbids it; nothing to fold into
            raise ValueError("a sighting needs a device_id or a user_id")
        known = current.get(s.device_id)
        if known is not None and not is_anonymous(known.user_key):
            targets.append(known.user_key)
            continue
        targets.append(anonymous_key(s.device_id))
        waiting.setdefault(s.device_id, []).append(i)
        if known is None and s.fresh:
            current[s.device_id] = changed[s.device_id] = Alias(anonymous_key(s.device_id))
    return Routing(targets, links, changed)


# --- merging ------------------------------------------------------------------------------


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _later(left: datetime | None, right: datetime | None) -> bool:
    """``left`` is strictly later than ``right`` (None is earlier than any time)."""
    if left is None:
        return False
    return right is None or left > right


def merge_attributes(
    user: tuple[dict[str, Any], dict[str, list[str]]],
    anonymous: tuple[dict[str, Any], dict[str, list[str]]],
) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, str]]:
    """Merge two (attributes, write marks) pairs; also returns, per name, which side
    ("user" or "anonymous") won. Per attribute, as ``logic.fold_attributes`` would have
    decided had both profiles' writes reached one profile:

    - both written by ``set_once``: the earliest wins;
    - one by ``set_once``, the other by anything else: the other wins (``set_once`` only
      fills a missing attribute);
    - otherwise the latest write wins, an ``unset`` (tombstone) included; a value
      without a write time is older than any that has one; on a tie the user's side wins.

    Idempotent: merging a pair with itself gives it back. The user's attributes come
    first, and at most ``MAX_ATTRIBUTES`` are kept."""
    u_attrs, u_marks = user
    a_attrs, a_marks = anonymous
    attrs: dict[str, Any] = {}
    marks: dict[str, list[str]] = {}
    winners: dict[str, str] = {}
    names = list(dict.fromkeys([*u_attrs, *u_marks, *a_attrs, *a_marks]))
    for name in names:
        u_at, u_op = write_mark(u_marks, name)
        a_at, a_op = write_mark(a_marks, name)
        u_known = name in u_attrs or u_op is not None
        a_known = name in a_attrs or a_op is not None
        if not a_known:
            side = "user"
        elif not u_known:
            side = "anonymous"
        elif u_op == "once" and a_op == "once" and name in u_attrs and name in a_attrs:
            side = "anonymous" if _later(u_at, a_at) else "user"
        elif u_op == "once" and name in u_attrs and a_op != "unset" and name in a_attrs:
            side = "anonymous"
        elif a_op == "once" and name in a_attrs and u_op != "unset" and name in u_attrs:
            side = "user"
        else:
            side = "anonymous" if _later(a_at, u_at) else "user"
        values, source_marks = (u_attrs, u_marks) if side == "user" else (a_attrs, a_marks)
        winners[name] = side
        if name in values:
            attrs[name] = values[name]
        if name in source_marks:
            marks[name] = list(source_marks[name])
    if len(attrs) > MAX_ATTRIBUTES:
        attrs = dict(list(attrs.items())[:MAX_ATTRIBUTES])
    return attrs, bounded_marks(attrs, marks), winners


def unite_tokens(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Push tokens (or web-push subscriptions) of several profiles as one list: one
    entry per token and one per (device, provider), the newest by ``updated_at``
    winning each; at most ``MAX_TOKENS``, the newest. Ordered oldest first. Idempotent
    (uniting a list with itself gives the same entries)."""
    entries = [e for entries in lists for e in entries if isinstance(e, dict)]
    oldest = datetime.min.replace(tzinfo=UTC)
    entries.sort(key=lambda e: _time(e.get("updated_at")) or oldest)
    by_slot: dict[tuple[Any, Any], dict[str, Any]] = {}
    for entry in entries:
        slot = (entry.get("device_id"), entry.get("provider"))
        by_slot.pop(slot, None)  # re-inserted last: dict order stays oldest first
        by_slot[slot] = entry
    by_token: dict[Any, dict[str, Any]] = {}
    for entry in by_slot.values():
        by_token.pop(entry.get("token"), None)
        by_token[entry.get("token")] = entry
    return [dict(e) for e in list(by_token.values())[-MAX_TOKENS:]]


def merge_profiles(user: ProfileState, anonymous: ProfileState) -> ProfileState:
    """The profile of ``user`` after a device's ``anonymous`` profile joined it.

    - counters (``sessions``, ``purchases``, ``revenue``, ``events``) are summed;
    - ``first_seen`` is the earliest, ``last_seen`` the latest (never moves back);
    - attributes: ``merge_attributes``; phone and email follow their attribute's winner
      (the winner's contact, else the other's unless the winner unset it);
    - device fields and push permission: the more recently seen profile's, where set;
    - push tokens and web-push subscriptions united (``unite_tokens``); opt-outs united
      (an opt-out on either profile holds);
    - attribution: the user's if it has one, else the anonymous one's;
    - last location: the newest.

    Not idempotent in the counters (two merges would count twice): the caller deletes
    the anonymous profile in the same transaction, so that it is merged once."""
    newer, older = (
        (anonymous, user)
        if _later(anonymous.last_seen, user.last_seen)
        else (
            user,
            anonymous,
        )
    )
    attrs, marks, winners = merge_attributes(
        (user.attributes, user.attribute_writes),
        (anonymous.attributes, anonymous.attribute_writes),
    )
    changes: dict[str, Any] = {
        "user_id": user.user_id or anonymous.user_id,
        "attributes": attrs,
        "attribute_writes": marks,
        "first_seen": min(filter(None, (user.first_seen, anonymous.first_seen)), default=None),
        "last_seen": max(filter(None, (user.last_seen, anonymous.last_seen)), default=None),
        "attribution": user.attribution if user.attribution is not None else anonymous.attribution,
        "sessions": user.sessions + anonymous.sessions,
        "purchases": user.purchases + anonymous.purchases,
        "revenue": _finite_sum(user.revenue, anonymous.revenue),
        "events": user.events + anonymous.events,
        "push_permission": _first_set(newer.push_permission, older.push_permission),
        "push_tokens": unite_tokens(user.push_tokens, anonymous.push_tokens),
        "web_push": unite_tokens(user.web_push, anonymous.web_push),
        "opt_outs": sorted(set(user.opt_outs) | set(anonymous.opt_outs)),
    }
    for name in DEVICE_FIELDS:
        changes[name] = _first_set(getattr(newer, name), getattr(older, name))
    for name in CONTACT_FIELDS:
        winner, loser = (anonymous, user) if winners.get(name) == "anonymous" else (user, anonymous)
        unset = write_mark(winner.attribute_writes, name)[1] == "unset"
        changes[name] = getattr(winner, name) or (None if unset else getattr(loser, name))
    if _later(anonymous.last_location_at, user.last_location_at):
        changes.update(
            last_lat=anonymous.last_lat,
            last_lon=anonymous.last_lon,
            last_location_at=anonymous.last_location_at,
        )
    return replace(user, **changes)


def _first_set(first: Any, second: Any) -> Any:
    return first if first is not None else second


def mark_carried(
    changes: Sequence[SegmentChanged], carried: Mapping[str, Mapping[str, str]]
) -> list[SegmentChanged]:
    """``changes`` with ``merged_from`` set on each entry of a user into a segment one of
    its merged anonymous profiles was a member of. ``carried``: user key → segment id →
    the anonymous key that was in it (the first merged, when two were)."""
    if not carried:
        return list(changes)
    marked = []
    for change in changes:
        source = carried.get(change.user_key, {}).get(change.segment_id)
        if source is not None and change.change == "entered":
            change = change.model_copy(update={"merged_from": source})
        marked.append(change)
    return marked
