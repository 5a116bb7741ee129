"""What the engine asks of a user's profile (``Facts``): time zone, attributes, first
seen, the channels they are reachable on, and condition rules on the current profile.

The profile is the segmenter's (``profiles``, read-only here). Reachability follows the
segment language's ``reachable`` meaning. A user with no profile yet (an event handled
before the segmenter folded it) has default facts: the app's default zone, no
attributes, reachable nowhere — a condition answers on an empty profile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from libs.runtime.tables import Profile
from services.journey.logic import Facts

IN_APP_WINDOW = timedelta(days=30)

# (node id, rule JSON) → answer, bound to one user and moment by the caller.
Condition = Callable[[str, Mapping[str, Any]], bool]


def _valid(entries: list[dict[str, Any]] | None) -> bool:
    return any(isinstance(e, dict) and e.get("valid") is True for e in entries or [])


def reachable(profile: Profile, now: datetime) -> frozenset[str]:
    """The channels ``profile`` can be reached on now (push: permission and a valid
    token; sms/email: a contact; web_push: a valid subscription; in_app: seen in the
    last 30 days; none opted out). ``inbox`` and ``log`` always."""
    outs = set(profile.opt_outs or [])
    found = {"inbox", "log"}
    if profile.push_permission is True and _valid(profile.push_tokens):
        found.add("push")
    if profile.phone:
        found.add("sms")
    if profile.email:
        found.add("email")
    if _valid(profile.web_push):
        found.add("web_push")
    if profile.last_seen is not None and profile.last_seen >= now - IN_APP_WINDOW:
        found.add("in_app")
    return frozenset(found - outs)


def facts_of(profile: Profile | None, now: datetime, condition: Condition) -> Facts:
    if profile is None:
        return Facts(condition=condition)
    return Facts(
        timezone=profile.timezone,
        attributes=dict(profile.attributes or {}),
        first_seen=profile.first_seen,
        reachable=reachable(profile, now),
        condition=condition,
    )
