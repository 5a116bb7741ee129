"""The journey engine ``advance``: walks, waits, events, goals, splits; and properties
over random graphs (Hypothesis): no run sends a node's job twice, every run ends or
waits for a moment to come."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.journeys.definition import Definition, Journey
from libs.journeys.validate import parse
from services.journey.logic import (
    Enter,
    EventSeen,
    Facts,
    History,
    Run,
    Wake,
    advance,
    choose_variant,
    may_enter,
    new_run,
)

NOW = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
EVENT_TRIGGER = {"type": "event", "event": "add_to_cart", "dedup_key": "cart_id"}


def cart_journey() -> Journey:
    return parse(
        EVENT_TRIGGER,
        {
            "start": "wait_2h",
            "nodes": [
                {"id": "wait_2h", "type": "wait", "duration": {"hours": 2}, "next": "push1"},
                {
                    "id": "push1",
                    "type": "send",
                    "channel": "push",
                    "content": {"body": "10% off if you buy within 24 hours"},
                    "next": "bought",
                },
                {
                    "id": "bought",
                    "type": "wait_for_event",
                    "event": "$purchase",
                    "where": [{"prop": "cart_id", "op": "eq", "from_trigger": "cart_id"}],
                    "timeout": {"hours": 24},
                    "on_event": "done",
                    "on_timeout": "push2",
                },
                {
                    "id": "push2",
                    "type": "send",
                    "channel": "best",
                    "fallback": ["push", "sms"],
                    "content": {"body": "Last chance"},
                },
                {"id": "done", "type": "exit"},
            ],
            "goal": {"event": "$purchase", "within": {"days": 2}},
        },
    )


def start(journey: Journey, props: dict[str, Any] | None = None) -> Run:
    return new_run(
        app_id="app",
        journey_id="jr",
        version=1,
        user_key="u1",
        cause="e1",
        now=NOW,
        trigger={"name": "add_to_cart", "event_id": "e1", "props": props or {"cart_id": "c9"}},
    )


def test_abandoned_cart_waits_sends_then_reminds() -> None:
    journey = cart_journey()
    d = journey.definition
    step = advance(start(journey), d, Enter(), NOW, Facts())
    assert (step.run.status, step.run.node, step.next_wake) == (
        "waiting",
        "wait_2h",
        NOW + timedelta(hours=2),
    )
    assert step.jobs == ()
    early = advance(step.run, d, Wake(), NOW + timedelta(hours=1), Facts())
    assert early.run == step.run and early.jobs == ()
    later = NOW + timedelta(hours=2)
    step = advance(step.run, d, Wake(), later, Facts())
    assert [j.job_id for j in step.jobs] == [f"{step.run.run_id}:push1:1"]
    assert step.jobs[0].context == {"cart_id": "c9"}
    assert (step.run.node, step.run.waiting_for) == ("bought", "$purchase")
    # Another cart's purchase is neither the wait's event nor... it is the goal:
    other = EventSeen("$purchase", "e2", later, {"cart_id": "other"})
    assert advance(step.run, d, other, later, Facts()).converted
    step = advance(
        step.run, d, Wake(), later + timedelta(hours=24), Facts(reachable=frozenset({"sms"}))
    )
    (reminder,) = step.jobs
    assert (reminder.channel, reminder.fallback_channels) == ("sms", [])
    assert step.run.status == "completed"
    assert step.next_wake is None


def test_goal_exits_at_any_node_and_counts_a_conversion() -> None:
    journey = cart_journey()
    step = advance(start(journey), journey.definition, Enter(), NOW, Facts())
    bought = EventSeen("$purchase", "e2", NOW + timedelta(minutes=5), {"cart_id": "c9"})
    done = advance(step.run, journey.definition, bought, NOW + timedelta(minutes=5), Facts())
    assert done.converted and done.run.status == "converted" and done.run.wake_at is None
    # Ended runs do not move again.
    again = advance(done.run, journey.definition, Wake(), NOW + timedelta(days=9), Facts())
    assert again.run == done.run and not again.converted


def test_a_purchase_after_the_goal_window_is_no_conversion() -> None:
    journey = cart_journey()
    run = replace(start(journey), status="waiting", node="bought", waiting_for="$purchase")
    late = NOW + timedelta(days=3)
    step = advance(
        run,
        journey.definition,
        EventSeen("$purchase", "e9", late, {"cart_id": "c9"}),
        late,
        Facts(),
    )
    assert not step.converted
    assert step.run.status == "exited" and step.run.exit_reason == "exit_node"


def test_wait_for_event_matches_the_trigger_properties() -> None:
    journey = parse(
        EVENT_TRIGGER,
        {
            "start": "w",
            "nodes": [
                {
                    "id": "w",
                    "type": "wait_for_event",
                    "event": "checkout",
                    "where": [{"prop": "cart_id", "op": "eq", "from_trigger": "cart_id"}],
                    "timeout": {"hours": 1},
                    "on_event": "yes",
                    "on_timeout": "no",
                },
                {"id": "yes", "type": "send", "channel": "push", "content": {"body": "y"}},
                {"id": "no", "type": "send", "channel": "push", "content": {"body": "n"}},
            ],
        },
    )
    d = journey.definition
    waiting = advance(start(journey), d, Enter(), NOW, Facts()).run
    wrong = advance(waiting, d, EventSeen("checkout", "e2", NOW, {"cart_id": "c1"}), NOW, Facts())
    assert wrong.run == waiting
    right = advance(waiting, d, EventSeen("checkout", "e3", NOW, {"cart_id": "c9"}), NOW, Facts())
    assert [j.step_id for j in right.jobs] == ["yes"]
    timeout = advance(waiting, d, Wake(), NOW + timedelta(hours=1), Facts())
    assert [j.step_id for j in timeout.jobs] == ["no"]


def test_condition_uses_the_profile_and_split_is_stable() -> None:
    journey = parse(
        {"type": "segment_entered", "segment": "s"},
        {
            "start": "c",
            "nodes": [
                {
                    "id": "c",
                    "type": "condition",
                    "rule": {"reachable": "push"},
                    "yes": "ab",
                    "no": "x",
                },
                {
                    "id": "ab",
                    "type": "split",
                    "variants": [
                        {"id": "a", "weight": 1, "next": "s"},
                        {"id": "b", "weight": 1, "next": "s"},
                    ],
                    "holdout": 20,
                },
                {"id": "s", "type": "send", "channel": "push", "content": {"body": "hi"}},
                {"id": "x", "type": "exit"},
            ],
            "goal": {"event": "$purchase", "within": {"days": 1}},
        },
    )
    d = journey.definition
    no = advance(start(journey), d, Enter(), NOW, Facts(condition=lambda _n, _r: False))
    assert no.run.status == "exited" and no.entered == ("c", "x")
    variants: Counter[str] = Counter()
    for i in range(3000):
        run = replace(start(journey), run_id=f"r{i}")
        step = advance(run, d, Enter(), NOW, Facts(condition=lambda _n, _r: True))
        variants[step.run.variant or ""] += 1
        if step.run.variant == "holdout":
            assert step.jobs == () and step.run.wake_at == NOW + timedelta(days=1)
            ended = advance(step.run, d, Wake(), NOW + timedelta(days=1), Facts())
            assert (ended.run.status, ended.run.exit_reason) == ("completed", "holdout_window")
        else:
            assert [j.variant_id for j in step.jobs] == [step.run.variant]
    assert 500 < variants["holdout"] < 700
    assert abs(variants["a"] - variants["b"]) < 250
    split = d.node("ab")
    assert choose_variant(split, "r1") == choose_variant(split, "r1")  # type: ignore[arg-type]


def test_local_time_wait_in_the_users_zone() -> None:
    journey = parse(
        {"type": "segment_entered", "segment": "s"},
        {
            "start": "w",
            "nodes": [
                {
                    "id": "w",
                    "type": "wait",
                    "until": {"time": "10:00", "weekdays": ["sat"]},
                    "next": "s",
                },
                {"id": "s", "type": "send", "channel": "push", "content": {"body": "hi"}},
            ],
        },
    )
    # 2026-05-01 is a Friday; Saturday 10:00 in Tehran (+03:30) is 06:30 UTC.
    step = advance(start(journey), journey.definition, Enter(), NOW, Facts(timezone="Asia/Tehran"))
    assert step.next_wake == datetime(2026, 5, 2, 6, 30, tzinfo=UTC)
    step = advance(
        start(journey), journey.definition, Enter(), NOW, Facts(timezone="Europe/Berlin")
    )
    assert step.next_wake == datetime(2026, 5, 2, 8, 0, tzinfo=UTC)


def test_entry_rules() -> None:
    d = cart_journey().definition
    assert may_enter(d, History(), NOW) is None
    assert may_enter(d, History(active=1, last_entered_at=NOW), NOW) == "max_concurrent"
    assert may_enter(d, History(active=0, last_entered_at=NOW), NOW) == "once"
    cooled = d.model_copy(
        update={
            "entry": d.entry.model_copy(
                update={"reentry": "after_cooldown", "cooldown": d.goal.within}
            )
        }
    )  # type: ignore[union-attr]
    assert may_enter(cooled, History(last_entered_at=NOW), NOW + timedelta(days=1)) == "cooldown"
    assert may_enter(cooled, History(last_entered_at=NOW), NOW + timedelta(days=2)) is None


# --- properties over random graphs --------------------------------------------------------

EVENTS = ("a", "b", "$purchase")


@st.composite
def graphs(draw: st.DrawFn) -> Definition:
    """Valid definitions: node i always links to i + 1 (so all are reachable); other
    edges of non-waits point forward, waits' anywhere (cycles pass through waits)."""
    n = draw(st.integers(1, 9))
    nodes: list[dict[str, Any]] = []
    for i in range(n):
        last = i == n - 1
        nxt = None if last else f"n{i + 1}"
        forward = st.sampled_from([f"n{j}" for j in range(i + 1, n)] or [None])
        anywhere = st.sampled_from([f"n{j}" for j in range(n)])
        kinds = ["send", "condition", "split", "update", "wait", "wfe"]
        kind = draw(st.sampled_from(["send", "exit", "update"] if last else kinds))
        node: dict[str, Any] = {"id": f"n{i}"}
        if kind == "send":
            node.update(
                type="send", channel=draw(st.sampled_from(["push", "best"])), content={"body": "x"}
            )
            if nxt:
                node["next"] = nxt
        elif kind == "update":
            node.update(type="update_attribute", set={"k": i})
            if nxt:
                node["next"] = nxt
        elif kind == "exit":
            node.update(type="exit")
        elif kind == "condition":
            node.update(
                type="condition", rule={"reachable": "push"}, yes=nxt, no=draw(forward) or nxt
            )
        elif kind == "split":
            other = draw(forward) or nxt
            node.update(
                type="split",
                variants=[
                    {"id": "a", "weight": 1, "next": nxt},
                    {"id": "b", "weight": 2, "next": other},
                ],
                holdout=draw(st.sampled_from([0, 10])),
            )
        elif kind == "wait":
            node.update(
                type="wait",
                duration={"minutes": draw(st.integers(0, 90))},
                next=nxt,
            )
        else:
            node.update(
                type="wait_for_event",
                event=draw(st.sampled_from(EVENTS)),
                timeout={"minutes": draw(st.integers(1, 90))},
                on_event=draw(anywhere),
                on_timeout=nxt,
            )
        nodes.append(node)
    goal = draw(st.sampled_from([None, {"event": "$purchase", "within": {"hours": 5}}]))
    raw: dict[str, Any] = {"start": "n0", "nodes": nodes}
    if goal:
        raw["goal"] = goal
    return parse({"type": "segment_entered", "segment": "s"}, raw).definition


stimuli = st.lists(
    st.one_of(
        st.tuples(st.just("wake"), st.integers(0, 120)),
        st.tuples(st.just("event"), st.sampled_from(EVENTS)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), stimuli, st.booleans(), st.integers(0, 10**6))
def test_no_job_twice_and_every_run_ends_or_waits(
    d: Definition, steps: list[tuple[str, Any]], condition: bool, seed: int
) -> None:
    facts = Facts(condition=lambda _n, _r: condition, reachable=frozenset({"push"}))
    run = replace(
        start(
            parse(
                {"type": "segment_entered", "segment": "s"},
                d.model_dump(mode="json", exclude_none=True),
            )
        ),
        run_id=f"r{seed}",
    )
    now = NOW
    sent: list[str] = []
    step = advance(run, d, Enter(), now, facts)
    for kind, value in [("enter", None), *steps]:
        if kind == "wake":
            now = now + timedelta(minutes=value)
            step = advance(step.run, d, Wake(), now, facts)
        elif kind == "event":
            step = advance(step.run, d, EventSeen(value, f"e{len(sent)}", now, {}), now, facts)
        sent.extend(j.job_id for j in step.jobs)
        # Every run has ended, or waits for a moment still to come.
        assert step.run.ended or (
            step.run.status == "waiting" and step.next_wake is not None and step.next_wake > now
        )
    assert len(sent) == len(set(sent)), Counter(sent).most_common(3)


@settings(max_examples=150, deadline=None)
@given(graphs(), st.lists(st.integers(0, 200), max_size=20))
def test_a_replayed_stimulus_emits_the_same_ids(d: Definition, wakes: list[int]) -> None:
    """The edge replays a stimulus only on the run as stored before it: same jobs."""
    facts = Facts(condition=lambda _n, _r: True)
    run = start(
        parse(
            {"type": "segment_entered", "segment": "s"},
            d.model_dump(mode="json", exclude_none=True),
        )
    )
    step = advance(run, d, Enter(), NOW, facts)
    now = NOW
    for minutes in wakes:
        now = now + timedelta(minutes=minutes)
        first = advance(step.run, d, Wake(), now, facts)
        again = advance(step.run, d, Wake(), now, facts)
        assert first == again
        step = first
