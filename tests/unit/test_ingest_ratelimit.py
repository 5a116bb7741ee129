"""The per-key token buckets and the ingest settings that size them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from libs.runtime.ratelimit import TokenBuckets, retry_after_seconds
from libs.runtime.settings import PlatformSettings


def test_a_fresh_key_gets_a_full_burst() -> None:
    buckets = TokenBuckets(rate_per_s=10, burst=100)
    assert buckets.take("k", 100, now=0.0) == 0.0
    assert buckets.take("k", 1, now=0.0) == pytest.approx(0.1)


def test_costs_events_not_requests() -> None:
    buckets = TokenBuckets(rate_per_s=10, burst=100)
    assert buckets.take("k", 60, now=0.0) == 0.0
    assert buckets.take("k", 40, now=0.0) == 0.0
    assert buckets.take("k", 1, now=0.0) > 0


def test_refused_request_spends_nothing_and_wait_is_exact() -> None:
    buckets = TokenBuckets(rate_per_s=10, burst=100)
    buckets.take("k", 90, now=0.0)  # 10 left
    wait = buckets.take("k", 50, now=0.0)
    assert wait == pytest.approx(4.0)  # 40 missing at 10/s
    assert buckets.take("k", 50, now=3.9) > 0  # still short: refusals spent nothing
    assert buckets.take("k", 50, now=4.0) == 0.0


def test_refill_is_capped_at_the_burst() -> None:
    buckets = TokenBuckets(rate_per_s=10, burst=100)
    buckets.take("k", 100, now=0.0)
    assert buckets.take("k", 100, now=1_000.0) == 0.0
    assert buckets.take("k", 1, now=1_000.0) > 0


def test_keys_are_independent() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=5)
    assert buckets.take("a", 5, now=0.0) == 0.0
    assert buckets.take("a", 1, now=0.0) > 0
    assert buckets.take("b", 5, now=0.0) == 0.0


def test_cost_above_burst_is_charged_as_the_burst() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=5)
    assert buckets.take("k", 50, now=0.0) == 0.0
    assert buckets.take("k", 50, now=0.0) == pytest.approx(5.0)


def test_a_clock_going_backwards_refills_nothing() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=5)
    buckets.take("k", 5, now=10.0)
    assert buckets.take("k", 1, now=5.0) > 0


def test_least_recently_used_keys_are_forgotten() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=2, max_keys=2)
    buckets.take("a", 2, now=0.0)
    buckets.take("b", 2, now=0.0)
    buckets.take("a", 0, now=0.0)  # touch a: b is now the oldest
    buckets.take("c", 2, now=0.0)  # evicts b
    assert buckets.take("a", 1, now=0.0) > 0  # a remembered, still empty
    assert buckets.take("b", 2, now=0.0) == 0.0  # b forgotten: full again


@pytest.mark.parametrize(("rate", "burst", "keys"), [(0, 1, 1), (-1, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_nonsense_configuration_is_refused(rate: float, burst: int, keys: int) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate_per_s=rate, burst=burst, max_keys=keys)


@pytest.mark.parametrize(
    ("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (2.5, 3), (59.99, 60)]
)
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: int) -> None:
    assert retry_after_seconds(wait) == header


def test_waiting_as_told_lets_the_same_request_through() -> None:
    buckets = TokenBuckets(rate_per_s=7, burst=50)
    buckets.take("k", 45, now=0.0)
    wait = buckets.take("k", 30, now=0.0)
    assert wait > 0
    assert buckets.take("k", 30, now=wait) == 0.0


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(0.5, 500),
    burst=st.integers(1, 1000),
    calls=st.lists(st.tuples(st.floats(0, 2), st.integers(0, 1200)), max_size=30),
)
def test_never_grants_more_than_burst_plus_refill(
    rate: float, burst: int, calls: list[tuple[float, int]]
) -> None:
    buckets = TokenBuckets(rate_per_s=rate, burst=burst)
    now = 0.0
    granted = 0
    for step, cost in calls:
        now += step
        wait = buckets.take("k", cost, now=now)
        assert wait >= 0
        if wait == 0:
            granted += min(cost, burst)
    assert granted <= burst + rate * now + 1e-6 * max(1, granted)


def test_ingest_settings_defaults() -> None:
    s = PlatformSettings()
    assert (s.ingest_max_batch, s.ingest_max_event_age_days) == (500, 7)
    assert (s.ingest_rate_per_s, s.ingest_rate_burst) == (200.0, 1000)


def test_ingest_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HODHOD_INGEST_MAX_BATCH", "100")
    monkeypatch.setenv("HODHOD_INGEST_MAX_EVENT_AGE_DAYS", "30")
    monkeypatch.setenv("HODHOD_INGEST_RATE_PER_S", "50.5")
    monkeypatch.setenv("HODHOD_INGEST_RATE_BURST", "100")
    s = PlatformSettings()
    assert (s.ingest_max_batch, s.ingest_max_event_age_days) == (100, 30)
    assert (s.ingest_rate_per_s, s.ingest_rate_burst) == (50.5, 100)


@pytest.mark.parametrize(
    "overrides",
    [
        {"ingest_rate_burst": 499},  # a full batch of 500 could never pass
        {"ingest_max_batch": 0},
        {"ingest_rate_per_s": 0},
        {"ingest_max_event_age_days": 0},
    ],
)
def test_ingest_settings_refuse_nonsense(overrides: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        PlatformSettings(**overrides)  # type: ignore[arg-type]
