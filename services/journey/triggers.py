"""Which journeys a record starts, and under which cause (the run's idempotency key).
Pure.

Causes make entries idempotent: a segment change starts at most one run per journey
(its ``change_id``), an event one (its ``event_id``, or the value of the trigger's
``dedup_key`` — one run per order), a date one a year, a broadcast firing one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from libs.journeys.definition import (
    AttributeTrigger,
    EventTrigger,
    GeofenceTrigger,
    Journey,
    SegmentTrigger,
)
from libs.schemas import Event, SegmentChanged
from services.journey.logic import compare, filters_match, lookup

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True, slots=True)
class Active:
    """An active journey at its current version."""

    id: str
    version: int
    journey: Journey
    kind: str = "journey"


@dataclass(frozen=True, slots=True)
class Entry:
    journey: Active
    cause: str
    trigger: Mapping[str, Any]


def segment_entries(journeys: Iterable[Active], change: SegmentChanged) -> list[Entry]:
    kind = "segment_entered" if change.change == "entered" else "segment_exited"
    return [
        Entry(j, f"segment:{change.change_id}", {"segment_id": change.segment_id})
        for j in journeys
        if isinstance(t := j.journey.trigger, SegmentTrigger)
        and t.type == kind
        and t.segment == change.segment_id
    ]


def event_entries(journeys: Iterable[Active], event: Event) -> list[Entry]:
    """Entries an event causes through event and attribute-changed triggers."""
    found = []
    context = {"name": event.name, "event_id": event.event_id, "props": dict(event.props)}
    for j in journeys:
        trigger = j.journey.trigger
        if isinstance(trigger, EventTrigger):
            if trigger.event != event.name or not filters_match(trigger.where, event.props, {}):
                continue
            cause = f"event:{event.event_id}"
            if trigger.dedup_key is not None:
                value = lookup(event.props, trigger.dedup_key)
                if value is not None:
                    cause = f"dedup:{trigger.dedup_key}:{value!s}"[:128]
            found.append(Entry(j, cause, context))
        elif isinstance(trigger, AttributeTrigger) and event.name == "$attributes":
            written = attribute_written(event.props, trigger.attribute)
            if written is None:
                continue
            _, value = written
            if trigger.to is not None and not compare(trigger.to.op, value, trigger.to.value):
                continue
            found.append(Entry(j, f"event:{event.event_id}", context))
    return found


def attribute_written(props: Mapping[str, Any], name: str) -> tuple[str, Any] | None:
    """(op, new value) if an ``$attributes`` event's props write ``name``."""
    for op in ("set", "set_once", "increment"):
        values = props.get(op)
        if isinstance(values, Mapping) and name in values:
            return op, values[name]
    unset = props.get("unset")
    if isinstance(unset, list) and name in unset:
        return "unset", None
    return None


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def location_of(event: Event) -> tuple[float, float] | None:
    """A ``$location`` event's coordinates, if valid."""
    if event.name != "$location":
        return None
    lat, lon = event.props.get("lat"), event.props.get("lon")
    if isinstance(lat, bool) or isinstance(lon, bool):
        return None
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return float(lat), float(lon)


def crossing(
    trigger: GeofenceTrigger, was_inside: bool | None, lat: float, lon: float
) -> tuple[bool, bool]:
    """(inside now, whether this location crosses the fence in the trigger's direction).
    An unknown previous state counts as outside: a first location inside is an entry,
    a first location outside is no exit."""
    inside = distance_m(trigger.lat, trigger.lon, lat, lon) <= trigger.radius_m
    before = bool(was_inside)
    if trigger.on == "enter":
        return inside, inside and not before
    return inside, before and not inside
