"""What the engine asks of a user's profile (``Facts``): time zone, attributes, first
seen, the channels they are reachable on, and condition rules on the current profile.

The profile is the segmenter's (``profiles``, read-only here). Reachability follows the
segment language's ``reachable`` meaning. A user with no profile yet (an event handled
before the segmenter folded it) has default facts: the app's default zone, no
attributes, reachable nowhere — a condition answers on an empty profile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from libs.rules.evaluation import evaluate
from libs.rules.language import CHANNELS, ReachableCond
from libs.rules.loader import state_of
from libs.runtime.tables import Profile
from services.journey.logic import Facts

# (node id, rule JSON) → answer, bound to one user and moment by the caller.
Condition = Callable[[str, Mapping[str, Any]], bool]


def reachable(profile: Profile, now: datetime) -> frozenset[str]:
    """The channels ``profile`` can be reached on now: the segment language's
    ``reachable`` for each channel, plus ``inbox`` and ``log`` always."""
    state = state_of(profile)
    found = {ch for ch in CHANNELS if evaluate(ReachableCond(ch), state, now)}
    return frozenset(found | {"inbox", "log"})


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
