"""In-memory segment evaluation: rule·profile evaluations/s on one core (issue target
≥ 50,000).

A realistic app (``bench._segments_infra.RULES``: 12 segments covering every condition
kind — attribute, event count in a window (daily counters and exact recent events with a
``where`` filter), revenue, last_seen, reachable, geofence, install, rfm, nested
all/any/not, a segment reference) over N generated users with realistic state (daily
counters over 90 days, recent events with props, tokens, location). Two measurements:

- ``evaluate``: ``evaluate(rule, view, now, context)`` for every rule × user;
- ``consumer path``: ``logic.membership_changes`` for every user with all 12 segments and
  the user's current memberships — exactly the call the segmenter consumer makes per
  user per batch (segment references and change ids included; the dependency order is
  computed once per pass, as the consumer computes it once per batch).

Everything runs in this one Python thread (one core). Each pass covers every user; the
median of REPEATS passes is reported. Tune with BENCH_SEG_EVAL_USERS / _REPEATS.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bench._segments_infra import RULES, User, population
from libs.rules.evaluation import evaluate, quintile_thresholds
from libs.rules.language import Node, parse_rule, walk
from libs.rules.semantics import Context, RfmThresholds
from libs.runtime.service import tune_gc
from services.segmenter import logic

USERS = int(os.environ.get("BENCH_SEG_EVAL_USERS", "5000"))
REPEATS = int(os.environ.get("BENCH_SEG_EVAL_REPEATS", "5"))
TARGET_PER_S = 50_000
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def rfm_context(users: list[User], now: datetime) -> Context:
    """The app's RFM thresholds, computed as Postgres would (``quintile_thresholds``)."""
    recency = [(now - u.state.last_seen) / timedelta(days=1) for u in users if u.state.last_seen]
    return Context(
        rfm=RfmThresholds(
            quintile_thresholds(recency),
            quintile_thresholds(float(u.state.sessions) for u in users),
            quintile_thresholds(u.state.revenue for u in users),
        )
    )


def kind(rule: Node) -> str:
    return "+".join(sorted({type(n).__name__ for n in walk(rule)}))


def pass_evaluate(rules: dict[str, Node], views: list[Any], ctx: Context) -> tuple[int, float]:
    started = time.perf_counter()
    hits = 0
    for view in views:
        for rule in rules.values():
            hits += evaluate(rule, view, NOW, ctx)
    return hits, time.perf_counter() - started


def pass_one_rule(rule: Node, views: list[Any], ctx: Context) -> float:
    started = time.perf_counter()
    for view in views:
        evaluate(rule, view, NOW, ctx)
    return time.perf_counter() - started


def pass_consumer(
    rules: dict[str, Node], views: list[Any], current: list[set[str]], ctx: Context
) -> tuple[int, float]:
    started = time.perf_counter()
    order = logic.dependency_order(rules)  # once per batch in the consumer (load_rules)
    changes = 0
    for i, view in enumerate(views):
        changes += len(
            logic.membership_changes(
                app_id="bench",
                user_key=f"u{i}",
                segments=rules,
                current=current[i],
                state=view,
                now=NOW,
                cause=f"e{i}",
                context=ctx,
                order=order,
            )
        )
    return changes, time.perf_counter() - started


def run() -> dict[str, Any]:
    tune_gc()
    started = time.perf_counter()
    users = list(population(0, USERS, NOW, recent=True))
    rules = {sid: parse_rule(raw) for sid, raw in RULES.items()}
    ctx = rfm_context(users, NOW)
    views = [u.view() for u in users]
    # Current memberships as the consumer would have stored them (decided at NOW - 1 h),
    # so that, as in production, most calls change nothing and some do.
    earlier = NOW - timedelta(hours=1)
    current = []
    for view in views:
        member: set[str] = set()
        for change in logic.membership_changes(
            app_id="bench",
            user_key="u",
            segments=rules,
            current=set(),
            state=view,
            now=earlier,
            cause="seed",
            context=ctx,
        ):
            member.add(change.segment_id)
        current.append(member)
    views = [replace(v, segments=frozenset(m)) for v, m in zip(views, current, strict=True)]
    print(f"  built {USERS} users in {time.perf_counter() - started:.1f} s", flush=True)

    per_pass = USERS * len(rules)
    eval_rates, consumer_rates = [], []
    hits = changes = 0
    for rep in range(REPEATS):
        hits, seconds = pass_evaluate(rules, views, ctx)
        eval_rates.append(per_pass / seconds)
        changes, seconds = pass_consumer(rules, views, current, ctx)
        consumer_rates.append(per_pass / seconds)
        print(
            f"  rep {rep}: evaluate {round(eval_rates[-1])}/s, "
            f"consumer path {round(consumer_rates[-1])}/s",
            flush=True,
        )
    by_rule = {}
    for sid, rule in rules.items():
        seconds = statistics.median(pass_one_rule(rule, views, ctx) for _ in range(REPEATS))
        by_rule[sid] = {"kind": kind(rule), "evaluations_per_s": round(USERS / seconds)}
        print(f"  {sid:<24} {by_rule[sid]['evaluations_per_s']:>9}/s  {kind(rule)}", flush=True)

    evaluate_rate = round(statistics.median(eval_rates))
    consumer_rate = round(statistics.median(consumer_rates))
    counters = [len(u.counters) for u in users]
    recent = [len(u.recent) for u in users]
    members = sum(len(m) for m in current)
    return {
        "parameters": {
            "users": USERS,
            "segments": len(rules),
            "rules": RULES,
            "repeats": REPEATS,
            "statistic": "median",
            "threads": 1,
            "now": NOW.isoformat(),
            "avg_daily_counters_per_user": round(statistics.mean(counters), 1),
            "avg_recent_events_per_user": round(statistics.mean(recent), 1),
            "avg_memberships_per_user": round(members / USERS, 2),
            "gc": "tune_gc() as in production",
            "note": "2 cores shared with other workers; one Python thread",
        },
        "figures": {
            "evaluate_rule_profile_per_s": evaluate_rate,
            "consumer_path_rule_profile_per_s": consumer_rate,
            "consumer_path_users_per_s": round(consumer_rate / len(rules)),
            "matches_per_pass": hits,
            "changes_per_consumer_pass": changes,
        },
        "targets": [
            {
                "name": name,
                "value": value,
                "minimum": TARGET_PER_S,
                "met": value >= TARGET_PER_S,
            }
            for name, value in (
                ("evaluate_rule_profile_per_s", evaluate_rate),
                ("consumer_path_rule_profile_per_s", consumer_rate),
            )
        ],
        "samples": {
            "evaluate_per_s": [round(r) for r in eval_rates],
            "consumer_path_per_s": [round(r) for r in consumer_rates],
            "by_rule": by_rule,
        },
    }
