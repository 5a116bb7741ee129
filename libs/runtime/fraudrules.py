"""Tracker-level fraud rules that both attribution and admin's reports apply. Pure.

The install-level rules (click injection, click spamming by device, device farms…) stay
in ``services/attribution/fraud.py``: only the attribution service judges installs. The
rules here judge a *tracker* from its totals, so the report that shows the totals can
show the verdict; they read the same ``apps.fraud`` settings admin validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LOW_CONVERSION = "low_conversion"
# Every tracker flag, in the order a report lists them.
FLAGS = (LOW_CONVERSION,)


@dataclass(frozen=True, slots=True)
class ConversionRule:
    """A tracker converts too little when it has at least ``min_clicks`` clicks and
    installs/clicks is strictly below ``min_conversion`` (defaults: 1,000 clicks, 0.1 %)."""

    min_conversion: float = 0.001
    min_clicks: int = 1000


def _number(value: Any) -> float | None:
    """A usable threshold: a non-negative int or float (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def conversion_rule(settings: Mapping[str, Any]) -> ConversionRule:
    """The rule of an app's stored fraud settings (``apps.fraud``: ``min_conversion``,
    ``min_clicks_for_conversion``). Absent, null, negative or mistyped values keep the
    default, so a stored document never breaks a reader. Never raises."""
    default = ConversionRule()
    ratio = _number(settings.get("min_conversion"))
    clicks = _number(settings.get("min_clicks_for_conversion"))
    return ConversionRule(
        min_conversion=default.min_conversion if ratio is None else ratio,
        min_clicks=default.min_clicks if clicks is None else int(clicks),
    )


def low_conversion(*, clicks: int, installs: int, rule: ConversionRule) -> bool:
    """Click spamming shows as a tracker whose clicks rarely become installs. It flags
    the tracker for review, never single installs (an honest install from a spammed
    tracker is not rejected). Fewer than ``max(min_clicks, 1)`` clicks are too few to
    judge."""
    if clicks < max(rule.min_clicks, 1):
        return False
    return installs / clicks < rule.min_conversion


def tracker_flags(*, clicks: int, installs: int, conversion: ConversionRule) -> list[str]:
    """The review flags of a tracker (or of a group of trackers, from their summed
    totals), in :data:`FLAGS` order; empty when nothing is suspicious."""
    found = set()
    if low_conversion(clicks=clicks, installs=installs, rule=conversion):
        found.add(LOW_CONVERSION)
    return [f for f in FLAGS if f in found]
