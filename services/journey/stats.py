"""Journey statistics: per node and per variant, with conversion rates, uplift over the
holdout group and a two-proportion z-test. Pure.

Per node: ``entered`` (runs that entered it, ever), ``waiting`` (runs waiting there now),
``exited`` (runs that ended there without converting), ``converted`` (runs whose goal was
met while they were there), ``capped`` (sends its caps skipped). Per variant: runs,
conversions and the rate; a variant's ``uplift`` is its rate over the holdout's, minus 1,
and ``p_value`` is the two-sided p of the z-test of its rate against the holdout's (or,
without a holdout, against the first variant).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from libs.journeys.definition import HOLDOUT


@dataclass(frozen=True, slots=True)
class NodeStats:
    node_id: str
    entered: int = 0
    waiting: int = 0
    exited: int = 0
    converted: int = 0
    capped: int = 0


@dataclass(frozen=True, slots=True)
class VariantStats:
    variant: str
    runs: int
    converted: int
    rate: float | None
    uplift: float | None = None
    z: float | None = None
    p_value: float | None = None
    baseline: str | None = None


def z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float] | None:
    """(z, two-sided p) of proportion x1/n1 against x2/n2 (pooled); None when either
    group is empty or the pooled rate is 0 or 1 (no variance: no test)."""
    if n1 == 0 or n2 == 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return None
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2))


def node_stats(
    order: list[str],
    entered: Iterable[tuple[str, str, int, int]],
    runs: Iterable[tuple[str | None, str | None, str, str | None, int]],
) -> list[NodeStats]:
    """``entered``: (node, variant, entered, capped) counters; ``runs``: (node, variant,
    status, exit reason, count) over the runs. Nodes in ``order``, then any others (of
    older versions)."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entered_at, _variant, n, capped in entered:
        table[entered_at]["entered"] += n
        table[entered_at]["capped"] += capped
    for at, _kind, status, _reason, count in runs:
        if at is None:
            continue
        column = {"waiting": "waiting", "converted": "converted"}.get(status, "exited")
        table[at][column] += count
    names = order + sorted(set(table) - set(order))
    return [NodeStats(n, **dict(table.get(n, {}))) for n in names]


def variant_stats(
    runs: Iterable[tuple[str | None, str | None, str, str | None, int]],
) -> list[VariantStats]:
    """Runs and conversions per variant (``all`` for runs that took no split)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _node, variant, status, _reason, count in runs:
        key = variant or "all"
        totals[key][0] += count
        if status == "converted":
            totals[key][1] += count
    names = sorted(totals, key=lambda v: (v == HOLDOUT, v))
    baseline = HOLDOUT if HOLDOUT in totals else (names[0] if names else None)
    found = []
    for name in names:
        n, x = totals[name]
        rate = x / n if n else None
        uplift = z = p = None
        if baseline is not None and name != baseline:
            bn, bx = totals[baseline]
            base_rate = bx / bn if bn else None
            if rate is not None and base_rate:
                uplift = rate / base_rate - 1
            test = z_test(x, n, bx, bn)
            if test is not None:
                z, p = test
        found.append(
            VariantStats(name, n, x, rate, uplift, z, p, baseline if name != baseline else None)
        )
    return found
