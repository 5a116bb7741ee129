"""Per-journey sending limits: a daily cap, a total cap and messages a second. Pure.

Caps skip a send (the run goes on; the node's ``capped`` stat counts it). The rate
spreads sends over time: the journey keeps its next free slot, each send takes the slot
and moves it by ``1 / per_second``; a send whose slot is in the future is deferred to
it (a durable task), not dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from libs.journeys.definition import Limits

# A slot this close to now is sent at once (the broker round trip is longer).
SLACK = timedelta(milliseconds=50)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["send", "defer", "capped"]
    at: datetime


@dataclass(frozen=True, slots=True)
class Budget:
    """Where the journey's counters stand: sent today (UTC), sent ever, next free slot."""

    today: int
    total: int
    next_slot: datetime | None


def decide(
    limits: Limits, budget: Budget, sends: int, now: datetime
) -> tuple[list[Decision], Budget]:
    """Decide ``sends`` sends in order; returns the decisions and the budget after them
    (deferred sends count as sent: they will be)."""
    decisions: list[Decision] = []
    today, total, slot = budget.today, budget.total, budget.next_slot
    step = timedelta(seconds=1 / limits.per_second) if limits.per_second else None
    for _ in range(sends):
        if (limits.daily_cap is not None and today >= limits.daily_cap) or (
            limits.total_cap is not None and total >= limits.total_cap
        ):
            decisions.append(Decision("capped", now))
            continue
        today += 1
        total += 1
        if step is None:
            decisions.append(Decision("send", now))
            continue
        at = max(slot or now, now)
        slot = at + step
        decisions.append(Decision("send" if at <= now + SLACK else "defer", at))
    return decisions, Budget(today, total, slot)
