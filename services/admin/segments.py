"""Segment management rules that need no SQL: rule checks with the path of the bad node,
who references a segment, and the tracker goal comparison's shares and ranking. Pure:
the caller passes stored rules, journeys and counted rows in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from libs.rules.language import Node, RuleError, parse_rule, referenced_segments
from libs.runtime.errors import Conflict, InvalidInput

# Keys of a journey's trigger or definition whose string value names a segment: the
# trigger's ``segment_entered`` and any rule-like ``{"segment": id}`` condition.
JOURNEY_SEGMENT_KEYS = frozenset({"segment_entered", "segment"})

RankBy = Literal["matching", "share"]


def checked_rule(
    raw: Any, rules: Mapping[str, Any] | None, *, segment_id: str | None = None
) -> Node:
    """Parse ``raw``; with ``rules`` (segment id → stored rule of the app's active
    segments) every ``{"segment": id}`` must name one of them and references must not
    loop (back to ``segment_id`` either, the segment being edited).

    Raises ``InvalidInput`` (422, code ``invalid_rule``) whose field is the path of the
    bad node under ``rule`` (``rule.all.1.op``) and whose message says why.
    """
    try:
        return parse_rule(raw, rules.get if rules is not None else None, segment_id=segment_id)
    except RuleError as exc:
        field = f"rule.{exc.path}" if exc.path != "rule" else "rule"
        raise InvalidInput(str(exc), field=field, code="invalid_rule") from None


@dataclass(frozen=True, slots=True)
class Referrer:
    kind: Literal["segment", "journey"]
    id: str
    name: str


def segment_referrers(
    segment_id: str,
    *,
    segments: Iterable[tuple[str, str, Any]],
    journeys: Iterable[tuple[str, str, Any, Any]],
) -> list[Referrer]:
    """Who would break if ``segment_id`` went away: ``segments`` (id, name, rule) whose rule
    has ``{"segment": segment_id}``, and ``journeys`` (id, name, trigger, definition) that
    name it anywhere. A stored rule that no longer parses references nothing (the
    segmenter skips it too). Sorted by kind, then id."""
    found = []
    for other_id, name, rule in segments:
        if other_id == segment_id:
            continue
        try:
            refs = referenced_segments(parse_rule(rule))
        except RuleError:
            continue
        if segment_id in refs:
            found.append(Referrer("segment", other_id, name))
    for journey_id, name, trigger, definition in journeys:
        if segment_id in set(_named_segments(trigger)) | set(_named_segments(definition)):
            found.append(Referrer("journey", journey_id, name))
    return sorted(found, key=lambda r: (r.kind, r.id))


def _named_segments(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in JOURNEY_SEGMENT_KEYS and isinstance(item, str):
                yield item
            else:
                yield from _named_segments(item)
    elif isinstance(value, list):
        for item in value:
            yield from _named_segments(item)


def refuse_if_referenced(segment_id: str, referrers: list[Referrer]) -> None:
    """Raises ``Conflict`` (409) naming every referrer, when there is any."""
    if not referrers:
        return
    names = "; ".join(f"{r.kind} {r.id} ({r.name})" for r in referrers)
    raise Conflict(
        f"segment {segment_id} is referenced by {names}: remove those references first",
        field="segment_id",
        code="segment_in_use",
    )


def tracker_groups(
    rows: Iterable[tuple[str, int, int]],
    names: Mapping[str, str],
    *,
    rank_by: RankBy = "matching",
) -> list[dict[str, Any]]:
    """The goal comparison of trackers from (tracker token, attributed users, matching
    users) rows: ``share`` = matching / attributed. Ranked by ``rank_by`` descending, then
    by the other measure descending, then by token; ``name`` from ``names`` (None for a
    token the app has no tracker for)."""
    groups = [
        {
            "tracker_token": token,
            "name": names.get(token),
            "attributed_users": attributed,
            "matching": matching,
            "share": matching / attributed if attributed else 0.0,
        }
        for token, attributed, matching in rows
    ]
    other = "share" if rank_by == "matching" else "matching"
    return sorted(groups, key=lambda g: (-g[rank_by], -g[other], g["tracker_token"]))


def csv_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """One exported row: instants as ISO 8601 (UTC offset included), the rest unchanged
    (None becomes an empty cell)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
