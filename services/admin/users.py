"""Profile edits and erasures as records for the segmenter, which alone writes profiles.
Pure: the caller passes the ids and the time in.

An edit becomes events on ``events`` with ``source="admin"``, the shapes the SDK's own
reserved events have — one ``$attributes`` (``set``/``unset``; phone and email are
attributes that are also contacts) and one ``$opt_out``/``$opt_in`` per channel — so
the segmenter folds them exactly like the user's own, in order with the user's other
records, and the warehouse keeps them as the edit's history. They are not activity:
the segmenter neither counts them nor lets them move ``last_seen``, and reports skip
them. An erasure is a ``ConfigChanged(entity="user", action="deleted")`` on
``config-changes``, which the segmenter and ingest's warehouse writer both act on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from libs.runtime.errors import InvalidInput
from libs.schemas import ConfigChanged, Event
from libs.schemas.base import ANONYMOUS_PREFIX, UserKey, validate

CONTACTS = ("phone", "email")


def edit_props(changes: dict[str, Any]) -> dict[str, Any]:
    """The ``applies`` of an edit, from the PATCH fields that were sent (``phone: null``
    included): ``$attributes`` props and the consent changes. Raises ``InvalidInput``
    naming the field for an empty or contradictory edit."""
    to_set = dict(changes.get("set") or {})
    to_unset = list(dict.fromkeys(changes.get("unset") or []))
    for name in CONTACTS:
        if name in to_set and not isinstance(to_set[name], str):
            raise InvalidInput("must be a string; prefer the top-level field", field=f"set.{name}")
        if name in changes:
            if name in to_set:
                raise InvalidInput(f"given twice: here and as set.{name}", field=name)
            if changes[name] is None:
                to_unset.append(name)
            else:
                to_set[name] = changes[name]
    for index, name in enumerate(to_unset):
        if name in to_set:
            raise InvalidInput("both set and unset", field=f"unset.{index}")
    opt_out = list(dict.fromkeys(changes.get("opt_out") or []))
    opt_in = list(dict.fromkeys(changes.get("opt_in") or []))
    for index, channel in enumerate(opt_in):
        if channel in opt_out:
            raise InvalidInput("both opted out and in", field=f"opt_in.{index}")
    applies: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    if to_set:
        attributes["set"] = to_set
    if to_unset:
        attributes["unset"] = to_unset
    if attributes:
        applies["attributes"] = attributes
    if opt_out:
        applies["opt_out"] = opt_out
    if opt_in:
        applies["opt_in"] = opt_in
    if not applies:
        raise InvalidInput("nothing to change", field="set")
    return applies


def identity_of(user_key: str) -> dict[str, str]:
    """The ids an event must carry to fold into profile ``user_key``: the device of an
    anonymous profile, else the user id."""
    if user_key.startswith(ANONYMOUS_PREFIX):
        return {"device_id": user_key.removeprefix(ANONYMOUS_PREFIX)}
    return {"user_id": user_key}


def edit_events(
    *, app_id: str, user_key: str, applies: dict[str, Any], edit_id: str, now: datetime
) -> list[Event]:
    """The events that carry out ``applies`` (from ``edit_props``); event ids derive
    from ``edit_id``, so the edit is applied once however often it is published."""
    base = {"app_id": app_id, "ts": now, "received_at": now, "source": "admin"}
    base.update(identity_of(user_key))
    events = []
    if "attributes" in applies:
        events.append(
            validate(
                Event,
                {
                    **base,
                    "event_id": f"{edit_id}:attributes",
                    "name": "$attributes",
                    "props": applies["attributes"],
                },
            )
        )
    for name, key in (("$opt_out", "opt_out"), ("$opt_in", "opt_in")):
        for channel in applies.get(key, []):
            events.append(
                validate(
                    Event,
                    {
                        **base,
                        "event_id": f"{edit_id}:{key}:{channel}",
                        "name": name,
                        "props": {"channel": channel},
                    },
                )
            )
    return events


def erasure(*, app_id: str, user_key: UserKey, erasure_id: str, now: datetime) -> ConfigChanged:
    """The record asking the segmenter and the warehouse writer to erase ``user_key``."""
    return ConfigChanged(
        app_id=app_id,
        change_id=erasure_id,
        entity="user",
        entity_id=user_key,
        action="deleted",
        ts=now,
    )
