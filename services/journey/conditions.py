"""Condition nodes: a segment rule answered on the user's profile now, by the segment
language's in-memory evaluator (``libs.rules.evaluation``) over a read-only view
(``libs.rules.loader``: the profile, memberships and — when the rule reads them — daily
counters and recent events). A user without a profile answers on an empty one.

RFM conditions are answered without the app's quintiles (every score is 1); a journey
that needs them should branch on a segment that has them (``{"segment": id}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from libs.rules import loader
from libs.rules.evaluation import evaluate
from libs.rules.language import Node, parse_rule
from libs.rules.profile import ProfileState, ProfileView
from services.journey.profiles import Condition


@lru_cache(maxsize=4096)
def _parsed(raw: str) -> Node:
    return parse_rule(json.loads(raw))


def rule_of(rule: Mapping[str, Any]) -> Node:
    """The parsed rule (validated definitions only hold parseable rules)."""
    return _parsed(json.dumps(rule, sort_keys=True))


async def load_conditions(
    session: AsyncSession, app_id: str, user_keys: Sequence[str], now: datetime
) -> Mapping[str, Condition]:
    """An evaluator per user, bound to their view as read now (no lock)."""
    found: dict[str, Condition] = {}
    for user_key in user_keys:
        view = await loader.load_view(session, app_id=app_id, user_key=user_key)
        found[user_key] = _bind(view or ProfileView(ProfileState()), now)
    return found


def _bind(view: ProfileView, now: datetime) -> Condition:
    def answer(_node_id: str, rule: Mapping[str, Any]) -> bool:
        return evaluate(rule_of(rule), view, now)

    return answer
