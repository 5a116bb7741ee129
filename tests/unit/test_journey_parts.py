"""The journey engine's pure parts: limits, local time, triggers, statistics."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.journeys.definition import DateTrigger, GeofenceTrigger, Limits, UntilDate, UntilTime
from libs.schemas import Event
from services.journey import limits, stats, timing
from services.journey.schedules import next_sweep
from services.journey.triggers import attribute_written, crossing, distance_m

NOW = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def test_caps_skip_and_the_rate_spreads_sends() -> None:
    capped = Limits(daily_cap=3, total_cap=4)
    decisions, budget = limits.decide(capped, limits.Budget(2, 2, None), 3, NOW)
    assert [d.action for d in decisions] == ["send", "capped", "capped"]
    assert (budget.today, budget.total) == (3, 3)
    total, _ = limits.decide(capped, limits.Budget(0, 4, None), 1, NOW)
    assert total[0].action == "capped"
    rated = Limits(per_second=10)
    decisions, budget = limits.decide(rated, limits.Budget(0, 0, None), 5, NOW)
    assert [d.at for d in decisions] == [NOW + timedelta(seconds=0.1 * i) for i in range(5)]
    assert [d.action for d in decisions] == ["send", "defer", "defer", "defer", "defer"]
    assert budget.next_slot == NOW + timedelta(seconds=0.5)
    # A slot left in the past does not let a burst through.
    later, _ = limits.decide(rated, limits.Budget(0, 0, NOW - timedelta(hours=1)), 2, NOW)
    assert [d.action for d in later] == ["send", "defer"]


@given(st.integers(1, 200), st.floats(0.5, 1000), st.integers(0, 50))
def test_the_rate_never_exceeds_its_limit(sends: int, rate: float, spent: int) -> None:
    decisions, _ = limits.decide(
        Limits(per_second=rate), limits.Budget(spent, spent, None), sends, NOW
    )
    times = sorted(d.at for d in decisions)
    for first, second in itertools.pairwise(times):
        assert (second - first).total_seconds() >= 1 / rate - 1e-6


def test_local_times_in_zones_and_weekdays() -> None:
    # 2026-05-01 is a Friday.
    assert timing.next_local_time(NOW, "Asia/Tehran", UntilTime(time="10:00")) == datetime(
        2026, 5, 1, 6, 30, tzinfo=UTC
    ) + timedelta(days=1)
    assert timing.next_local_time(NOW, "Europe/Berlin", UntilTime(time="10:00")) == datetime(
        2026, 5, 1, 8, 0, tzinfo=UTC
    )
    monday = timing.next_local_time(NOW, "UTC", UntilTime(time="09:00", weekdays=["mon"]))
    assert monday == datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    assert timing.zone("Not/AZone").key == "Asia/Tehran"


def test_dst_gap_and_leap_day() -> None:
    # Berlin skips 02:00–03:00 on 2026-03-29: 02:30 is taken after the gap.
    spring = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    moment = timing.next_local_time(spring, "Europe/Berlin", UntilTime(time="02:30"))
    assert moment == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert timing.yearly(datetime(2024, 2, 29).date(), 2025).isoformat() == "2025-02-28"


def test_until_date_before_a_birthday() -> None:
    until = UntilDate(
        attribute="birthday", offset={"days": 1}, before=True, time="09:00", yearly=True
    )
    moment = timing.until_date(NOW, "UTC", until, "1990-06-10")
    assert moment == datetime(2026, 6, 9, 9, 0, tzinfo=UTC)
    assert timing.until_date(NOW, "UTC", until, "not a date") == NOW
    passed = UntilDate(attribute="d", time="00:00")
    assert timing.until_date(NOW, "UTC", passed, "2020-01-01") == NOW


def test_date_moments_and_anniversaries() -> None:
    after, until = NOW - timedelta(hours=1), NOW + timedelta(days=1)
    found = timing.date_moments_between("2000-05-01", "Europe/Berlin", "10:00", 0, after, until)
    assert found == [(2026, datetime(2026, 5, 1, 8, 0, tzinfo=UTC))]
    signed_up = datetime(2026, 5, 1, 7, 0, tzinfo=UTC)
    assert (
        timing.date_moments_between(
            signed_up, "UTC", "10:00", 0, after, until, from_year_after=signed_up.date()
        )
        == []
    )


def test_sweeps_fall_on_the_quarter_hours_of_the_trigger() -> None:
    trigger = DateTrigger(type="date", attribute="birthday", at="10:07")
    assert next_sweep(trigger, NOW) == NOW + timedelta(minutes=7)
    assert next_sweep(trigger, NOW + timedelta(minutes=7)) == NOW + timedelta(minutes=22)


def test_geofence_crossings() -> None:
    fence = GeofenceTrigger(type="geofence", on="enter", lat=35.7, lon=51.4, radius_m=200)
    assert distance_m(35.7, 51.4, 35.701, 51.4) == pytest.approx(111.2, abs=0.5)
    assert crossing(fence, None, 35.7, 51.4) == (True, True)
    assert crossing(fence, True, 35.7, 51.4) == (True, False)
    leave = fence.model_copy(update={"on": "exit"})
    assert crossing(leave, None, 36.0, 51.4) == (False, False)
    assert crossing(leave, True, 36.0, 51.4) == (False, True)


def test_attribute_writes() -> None:
    assert attribute_written({"set": {"tier": "gold"}}, "tier") == ("set", "gold")
    assert attribute_written({"unset": ["tier"]}, "tier") == ("unset", None)
    assert attribute_written({"set": {"x": 1}}, "tier") is None


def test_z_test_against_a_textbook_value() -> None:
    # 200/1000 against 150/1000: pooled 0.175, z = 0.05 / sqrt(0.175*0.825*0.002) ≈ 2.94.
    z, p = stats.z_test(200, 1000, 150, 1000)  # type: ignore[misc]
    assert z == pytest.approx(2.9424, abs=1e-3)
    assert p == pytest.approx(0.00326, abs=2e-5)  # two-sided, from the normal table
    assert stats.z_test(0, 10, 0, 10) is None and stats.z_test(1, 0, 1, 10) is None


def test_variant_stats_with_a_holdout() -> None:
    runs = [
        ("s", "a", "converted", "goal", 200),
        ("s", "a", "completed", "completed", 800),
        ("ab", "holdout", "converted", "goal", 150),
        ("ab", "holdout", "completed", "holdout_window", 850),
    ]
    a, holdout = stats.variant_stats(runs)
    assert (a.variant, a.runs, a.converted, a.rate) == ("a", 1000, 200, 0.2)
    assert a.uplift == pytest.approx(0.2 / 0.15 - 1) and a.baseline == "holdout"
    assert a.p_value is not None and a.p_value < 0.01
    assert holdout.variant == "holdout" and holdout.uplift is None
    nodes = stats.node_stats(["ab", "s"], [("ab", "a", 2000, 0), ("s", "a", 1000, 3)], runs)
    assert [(n.node_id, n.entered, n.exited, n.converted, n.capped) for n in nodes] == [
        ("ab", 2000, 850, 150, 0),
        ("s", 1000, 800, 200, 3),
    ]


def test_event_source_journey_is_a_contract_value() -> None:
    event = Event(
        app_id="a",
        event_id="e",
        name="$attributes",
        user_id="u",
        ts=NOW,
        received_at=NOW,
        source="journey",
    )
    assert event.source == "journey"
