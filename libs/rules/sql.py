"""Segment rules to SQL: the bulk twin of ``libs.rules.evaluation.evaluate``, used by
the segmenter's scheduler (re-evaluation in bulk) and by admin (preview counts, samples,
reachability and tracker breakdowns).

``compile_rule`` turns a parsed rule into a boolean SQLAlchemy Core expression over
``profiles`` (counters, recent events and memberships through correlated subqueries);
``matching_users`` wraps it in a select of the app's matching user keys. Both evaluators
take the same ``now`` and ``Context`` and must agree on every profile: every leaf is
made two-valued (``coalesce(…, false)``) so that ``not`` inverts exactly as in Python,
and everything computed from the rule alone (cut-off instants, day bounds, dates in
values, RFM cut-offs) is computed in Python with the very functions the evaluator uses
(``libs.rules.semantics``). Builds statements and executes nothing, except
``rfm_thresholds`` and ``context_for``, which read the app-level context a rule needs,
and ``without_jit``, which every caller runs before evaluating a rule in bulk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    Numeric,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from libs.rules.language import (
    All,
    AnyOf,
    AttributeCond,
    EventCond,
    GeofenceCond,
    InstallCond,
    Node,
    Not,
    ReachableCond,
    RevenueCond,
    RfmCond,
    SeenCond,
    SegmentCond,
    Window,
    walk,
)
from libs.rules.semantics import (
    DEG,
    EARTH_RADIUS_M,
    IN_APP_WINDOW,
    NO_CONTEXT,
    Context,
    RfmThresholds,
    ago,
    as_date,
    day_range,
    recency_cuts,
)
from libs.runtime.tables import DailyCounter, Membership, Profile, RecentEventRow

Expr = ColumnElement[Any]
Bool = ColumnElement[bool]


def matching_users(
    node: Node, *, app_id: str, now: datetime, context: Context = NO_CONTEXT
) -> Select[Any]:
    """``SELECT user_key FROM profiles WHERE app_id = :app_id AND <rule>``."""
    return select(Profile.user_key).where(
        Profile.app_id == app_id, compile_rule(node, app_id=app_id, now=now, context=context)
    )


def compile_rule(node: Node, *, app_id: str, now: datetime, context: Context = NO_CONTEXT) -> Bool:
    """The rule as a never-NULL boolean over ``profiles`` (rows of ``app_id``)."""
    return _Compiler(app_id, now, context).node(node)


def _json(value: Any) -> Expr:
    return cast(literal(json.dumps(value), String), JSONB)


def _decimal(value: int | float) -> Decimal:
    # The float's shortest repr, as JSON (and so JSONB) spells it.
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _two_valued(expr: Bool) -> Bool:
    return func.coalesce(expr, false(), type_=Boolean)


def _compare(op: str, left: Any, right: Any) -> Bool:
    match op:
        case "eq":
            return left == right  # type: ignore[no-any-return]
        case "ne":
            return left != right  # type: ignore[no-any-return]
        case "gt":
            return left > right  # type: ignore[no-any-return]
        case "gte":
            return left >= right  # type: ignore[no-any-return]
        case "lt":
            return left < right  # type: ignore[no-any-return]
        case _:
            return left <= right  # type: ignore[no-any-return]


def _iso(text_value: Expr) -> Expr:
    return func.hodhod_iso_timestamp(text_value, type_=DateTime(timezone=True))


def json_condition(column: Any, cond: AttributeCond, now: datetime) -> Bool:
    """``evaluation.match_attribute`` over a JSONB object column (attributes, event props)."""
    value = column[cond.attribute]
    kind = func.jsonb_typeof(value)
    present = func.coalesce(kind != "null", false(), type_=Boolean)
    expected = cond.value
    match cond.op:
        case "exists":
            return present
        case "not_exists":
            return not_(present)
        case "eq":
            return and_(present, value == _json(expected)) if expected is not None else false()
        case "ne":
            if expected is None:
                return true()
            return or_(not_(present), value != _json(expected))
        case "in" | "not_in":
            candidates = [_json(v) for v in expected if v is not None]
            inside = and_(present, value.in_(candidates)) if candidates else false()
            return inside if cond.op == "in" else not_(_two_valued(inside))
        case "contains":
            return and_(kind == "string", func.strpos(value.astext, expected) > 0)
        case "starts_with":
            return and_(kind == "string", func.starts_with(value.astext, expected))
        case "before" | "after":
            when = _iso(value.astext)
            cut = ago(now, expected)
            if cut is None:
                return when.is_not(None) if cond.op == "after" else false()
            return and_(kind == "string", when < cut if cond.op == "before" else when >= cut)
    if isinstance(expected, int | float):
        number = cast(value, Numeric)
        return case(
            (kind == "number", _compare(cond.op, number, literal(_decimal(expected), Numeric))),
            else_=false(),
        )
    expected_date = as_date(expected)
    if expected_date is None:
        return false()
    return and_(kind == "string", _compare(cond.op, _iso(value.astext), expected_date))


def _counter_leaf(node: Node) -> bool:
    """A condition answered from the daily counters."""
    return isinstance(node, RevenueCond) or (isinstance(node, EventCond) and not node.exact)


def _on_counters(node: Node) -> bool:
    """Whether every condition of ``node`` is answered from the daily counters."""
    return all(_counter_leaf(n) for n in walk(node) if not isinstance(n, All | AnyOf | Not))


def _cost(node: Node) -> int:
    """A rank of what evaluating ``node`` per profile costs: 0 for the profile's own
    columns, 1 for a membership probe, 2 for a subquery over recent events, 3 for one
    over the daily counters (the most rows)."""
    ranks = [
        3 if _counter_leaf(n) else 2 if isinstance(n, EventCond) else 1
        for n in walk(node)
        if isinstance(n, EventCond | RevenueCond | SegmentCond)
    ]
    return max(ranks, default=0)


class _Compiler:
    def __init__(self, app_id: str, now: datetime, context: Context) -> None:
        self.app_id = app_id
        self.now = now
        self.context = context
        self._leaves: dict[type, Callable[[Any], Bool]] = {
            AttributeCond: lambda n: json_condition(Profile.attributes, n, now),
            SeenCond: self.seen,
            InstallCond: self.install,
            EventCond: self.event,
            RevenueCond: self.revenue,
            ReachableCond: self.reachable,
            GeofenceCond: self.geofence,
            SegmentCond: self.segment,
            RfmCond: self.rfm,
        }

    def node(self, node: Node) -> Bool:
        if isinstance(node, All | AnyOf):
            # Cheapest first: Postgres evaluates AND and OR left to right, stopping at
            # the first false (true); it reorders by cost only a WHERE's top-level ANDs,
            # not those under OR, NOT, CASE or an aggregate's FILTER. Every part is
            # two-valued and free of side effects, so the order changes no answer.
            children = sorted(node.nodes, key=_cost)
            combine = and_ if isinstance(node, All) else or_
            folded = tuple(n for n in children if _on_counters(n))
            if sum(1 for n in folded for leaf in walk(n) if _counter_leaf(leaf)) < 2:
                folded = ()
            parts = [self.node(n) for n in children if not (folded and _on_counters(n))]
            if folded:
                parts.append(self.counters_at_once(type(node)(folded)))
            return combine(*parts)
        if isinstance(node, Not):
            return not_(self.node(node.node))
        return _two_valued(self._leaves[type(node)](node))

    def counters_at_once(self, node: All | AnyOf) -> Bool:
        """``node``'s daily-counter conditions in one subquery: one range scan of the
        user's counter rows over the union of their windows, each condition's sum
        ``FILTER``ed to its own window (and event name), instead of one correlated
        subquery — one index probe — per condition. Each sum is what the condition's own
        subquery computes (the same rows, in the same order) and the subquery always
        returns a row, so the answer is the same."""
        leaves = [n for n in walk(node) if isinstance(n, EventCond | RevenueCond)]
        ranges = [day_range(n.window, self.now) for n in leaves]
        lows, highs = [r[0] for r in ranges], [r[1] for r in ranges]
        low = None if None in lows else min(d for d in lows if d is not None)
        high = None if None in highs else max(d for d in highs if d is not None)
        names = {n.name if isinstance(n, EventCond) else None for n in leaves}
        name = next(iter(names)) if len(names) == 1 else None
        where = [*self._counters()]
        if name is not None:
            where.append(DailyCounter.name == name)
        if low is not None:
            where.append(DailyCounter.day >= low)
        if high is not None:
            where.append(DailyCounter.day <= high)

        def total(leaf: EventCond | RevenueCond) -> Expr:
            own_low, own_high = day_range(leaf.window, self.now)
            only = []
            if isinstance(leaf, EventCond) and name is None:
                only.append(DailyCounter.name == leaf.name)
            if own_low is not None and own_low != low:
                only.append(DailyCounter.day >= own_low)
            if own_high is not None and own_high != high:
                only.append(DailyCounter.day <= own_high)
            summed: Expr
            if isinstance(leaf, EventCond):
                summed, zero = func.sum(DailyCounter.count), literal(0)
            else:
                summed, zero = func.sum(DailyCounter.revenue), literal(0.0)
            return func.coalesce(summed.filter(and_(*only)) if only else summed, zero)

        def compiled(n: Node) -> Bool:
            if isinstance(n, All):
                return and_(*(compiled(c) for c in n.nodes))
            if isinstance(n, AnyOf):
                return or_(*(compiled(c) for c in n.nodes))
            if isinstance(n, Not):
                return not_(compiled(n.node))
            if isinstance(n, EventCond):
                return _compare(n.count_op, total(n), literal(n.count, Integer))
            assert isinstance(n, RevenueCond)
            return _compare(n.op, total(n), literal(n.value, Float))

        return _two_valued(select(compiled(node)).where(*where).scalar_subquery())

    def seen(self, node: SeenCond) -> Bool:
        column = Profile.first_seen if node.which == "first_seen" else Profile.last_seen
        cut = ago(self.now, node.ago)
        if cut is None:
            return column.is_not(None) if node.op == "after" else false()
        return column < cut if node.op == "before" else column >= cut

    def install(self, node: InstallCond) -> Bool:
        key = "tracker_token" if node.field == "tracker" else node.field
        # An install rejected as fraud was never attributed: it names no source.
        status = func.coalesce(Profile.attribution["status"].astext, "")
        return and_(Profile.attribution[key] == _json(node.value), status != "rejected")

    def _days(self, window: Window) -> list[Bool]:
        low, high = day_range(window, self.now)
        bounds = []
        if low is not None:
            bounds.append(DailyCounter.day >= low)
        if high is not None:
            bounds.append(DailyCounter.day <= high)
        return bounds

    def _counters(self) -> list[Bool]:
        return [DailyCounter.app_id == self.app_id, DailyCounter.user_key == Profile.user_key]

    def event(self, node: EventCond) -> Bool:
        if node.exact:
            assert node.window.within is not None  # the parser guarantees it
            count: Expr = (
                select(func.count())
                .where(
                    RecentEventRow.app_id == self.app_id,
                    RecentEventRow.user_key == Profile.user_key,
                    RecentEventRow.name == node.name,
                    RecentEventRow.ts >= self.now - node.window.within,
                    *(json_condition(RecentEventRow.props, f, self.now) for f in node.where),
                )
                .scalar_subquery()
            )
        else:
            count = (
                select(func.coalesce(func.sum(DailyCounter.count), 0))
                .where(*self._counters(), DailyCounter.name == node.name, *self._days(node.window))
                .scalar_subquery()
            )
        return _compare(node.count_op, count, literal(node.count, Integer))

    def revenue(self, node: RevenueCond) -> Bool:
        total = (
            select(func.coalesce(func.sum(DailyCounter.revenue), 0.0))
            .where(*self._counters(), *self._days(node.window))
            .scalar_subquery()
        )
        return _compare(node.op, total, literal(node.value, Float))

    def reachable(self, node: ReachableCond) -> Bool:
        allowed = not_(Profile.opt_outs.op("@>", return_type=Boolean)(_json([node.channel])))
        valid = _json([{"valid": True}])
        match node.channel:
            case "push":
                reach = and_(
                    Profile.push_permission.is_(True),
                    Profile.push_tokens.op("@>", return_type=Boolean)(valid),
                )
            case "sms":
                reach = and_(Profile.phone.is_not(None), Profile.phone != "")
            case "email":
                reach = and_(Profile.email.is_not(None), Profile.email != "")
            case "web_push":
                reach = Profile.web_push.op("@>", return_type=Boolean)(valid)
            case _:
                reach = Profile.last_seen >= self.now - IN_APP_WINDOW
        return and_(allowed, reach)

    def geofence(self, node: GeofenceCond) -> Bool:
        # evaluation.haversine_m, operation for operation (same rounding).
        def f(x: float) -> Expr:
            return literal(x, Float)

        s_lat = func.sin((Profile.last_lat - f(node.lat)) * f(DEG) / f(2.0), type_=Float)
        s_lon = func.sin((Profile.last_lon - f(node.lon)) * f(DEG) / f(2.0), type_=Float)
        a = s_lat * s_lat + func.cos(f(node.lat) * f(DEG), type_=Float) * func.cos(
            Profile.last_lat * f(DEG), type_=Float
        ) * (s_lon * s_lon)
        distance = (
            f(2.0)
            * f(EARTH_RADIUS_M)
            * func.asin(func.sqrt(func.least(f(1.0), a, type_=Float), type_=Float), type_=Float)
        )
        cut = ago(self.now, node.max_age)
        # least() skips NULLs: a missing coordinate must be excluded explicitly.
        fresh: list[Bool] = [
            Profile.last_lat.is_not(None),
            Profile.last_lon.is_not(None),
            Profile.last_location_at.is_not(None),
        ]
        if cut is not None:
            fresh.append(Profile.last_location_at >= cut)
        where = distance <= f(node.radius_m) if node.inside else distance > f(node.radius_m)
        return and_(*fresh, where)

    def segment(self, node: SegmentCond) -> Bool:
        return exists(
            select(1).where(
                Membership.app_id == self.app_id,
                Membership.segment_id == node.segment_id,
                Membership.user_key == Profile.user_key,
            )
        )

    def rfm(self, node: RfmCond) -> Bool:
        thresholds = self.context.rfm
        if thresholds is None:
            return false()

        def above(column: Any, cuts: tuple[float, ...]) -> Expr:
            return sum((case((column > literal(t, Float), 1), else_=0) for t in cuts), literal(0))

        before = sum(
            (
                case((Profile.last_seen < cut, 1), else_=0)
                for cut in recency_cuts(self.now, thresholds)
                if cut is not None
            ),
            literal(0),
        )
        scores = (
            case((Profile.last_seen.is_(None), 1), else_=5 - before),
            1 + above(Profile.sessions, thresholds.frequency),
            1 + above(Profile.revenue, thresholds.monetary),
        )
        parts = [
            and_(score >= bounds[0], score <= bounds[1])
            for bounds, score in zip((node.r, node.f, node.m), scores, strict=True)
            if bounds is not None
        ]
        return and_(true(), *parts)


async def rfm_thresholds(session: AsyncSession, *, app_id: str, now: datetime) -> RfmThresholds:
    """The app's RFM quintile cut points (``percentile_cont``; defined in
    ``libs.rules.evaluation``). One scan of the app's profiles: call once per batch or
    request, not per user."""
    quintiles = text("ARRAY[0.2, 0.4, 0.6, 0.8]::float8[]")
    recency = func.extract("epoch", now - Profile.last_seen) / 86400.0
    row = (
        await session.execute(
            select(
                func.percentile_cont(quintiles)
                .within_group(recency.cast(Float))
                .filter(Profile.last_seen.is_not(None)),
                func.percentile_cont(quintiles).within_group(Profile.sessions.cast(Float)),
                func.percentile_cont(quintiles).within_group(Profile.revenue),
            ).where(Profile.app_id == app_id)
        )
    ).one()
    return RfmThresholds(*(tuple(float(v) for v in values or ()) for values in row))


async def context_for(session: AsyncSession, *, app_id: str, node: Node, now: datetime) -> Context:
    """The ``Context`` evaluating ``node`` for ``app_id`` needs: RFM thresholds are read
    (one scan) only when the rule has an ``rfm`` condition."""
    if not any(isinstance(n, RfmCond) for n in walk(node)):
        return NO_CONTEXT
    return Context(rfm=await rfm_thresholds(session, app_id=app_id, now=now))


async def without_jit(session: AsyncSession) -> None:
    """Turn Postgres' JIT compilation off for the rest of the session's transaction; call
    it before running compiled rules over an app's profiles. Idempotent.

    Correlated counter subqueries make the planner's estimate of a rule huge (about
    2e6 for 50,000 profiles, 1.4e8 for 1,000,000), far past ``jit_above_cost``, so
    Postgres would JIT-compile and optimise the query for 0.2-0.45 s, more than the work
    it speeds up (filters over the profiles) saves unless the app is huge. Measured with
    bench/segments_bulk.py's 5-condition rule: 400 ms with JIT, 170 ms without over
    50,000 profiles; over 1,000,000 a wash (~0.3 s of JIT won back by faster filters).
    """
    await session.execute(text("SET LOCAL jit = off"))
