"""Tracker helpers: CTIT buckets (bounds, bucketing, cumulative filling, CSV), the
shaping of user-list CSV rows, and the event postback settings check."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.admin import logic

S = timedelta(seconds=1)
US = timedelta(microseconds=1)


def test_ctit_bounds_are_the_documented_log_spaced_ladder() -> None:
    minute, hour, day = 60, 3600, 86400
    assert logic.CTIT_BOUNDS == (
        0,
        10,
        30,
        minute,
        5 * minute,
        15 * minute,
        30 * minute,
        hour,
        3 * hour,
        6 * hour,
        12 * hour,
        day,
        3 * day,
        7 * day,
        30 * day,
    )


@pytest.mark.parametrize(
    ("ctit", "bound"),
    [
        (-7 * 86400 * S, 0),  # click a week after the install: injection
        (-US, 0),
        (timedelta(0), 0),  # click at the install's instant: still not honest
        (US, 10),
        (10 * S, 10),  # a CTIT equal to a bound is in that bucket (le)
        (10 * S + US, 30),
        (30 * S, 30),
        (45 * S, 60),
        (60 * S + US, 300),
        (4 * 60 * S, 300),
        (15 * 60 * S, 900),
        (20 * 60 * S, 1800),
        (3600 * S, 3600),
        (2 * 3600 * S, 10800),
        (5 * 3600 * S, 21600),
        (12 * 3600 * S, 43200),
        (13 * 3600 * S, 86400),
        (2 * 86400 * S, 259200),
        (7 * 86400 * S, 604800),
        (29 * 86400 * S, 2592000),
        (30 * 86400 * S, 2592000),
        (30 * 86400 * S + US, None),  # past the last bound: +Inf
        (400 * 86400 * S, None),
    ],
)
def test_ctit_bound(ctit: timedelta, bound: int | None) -> None:
    assert logic.ctit_bound(ctit) == bound


@given(st.timedeltas(min_value=timedelta(days=-60), max_value=timedelta(days=60)))
def test_ctit_bound_is_the_smallest_bound_at_least_the_ctit(ctit: timedelta) -> None:
    bound = logic.ctit_bound(ctit)
    below = [b for b in logic.CTIT_BOUNDS if timedelta(seconds=b) < ctit]
    if bound is None:
        assert below == list(logic.CTIT_BOUNDS)
    else:
        assert ctit <= timedelta(seconds=bound)
        assert below == [b for b in logic.CTIT_BOUNDS if b < bound]


def test_ctit_buckets_are_cumulative_and_end_in_the_total() -> None:
    buckets = logic.ctit_buckets({0: 2, 10: 1, 300: 4, None: 3})
    assert [b["le_seconds"] for b in buckets] == [*logic.CTIT_BOUNDS, None]
    assert [b["count"] for b in buckets] == [2, 3, 3, 3, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 10]


def test_ctit_buckets_of_nothing_are_all_zero() -> None:
    buckets = logic.ctit_buckets({})
    assert len(buckets) == len(logic.CTIT_BOUNDS) + 1
    assert all(b["count"] == 0 for b in buckets)
    assert buckets[-1] == {"le_seconds": None, "count": 0}


def test_ctit_buckets_refuse_a_key_that_is_not_a_bound() -> None:
    with pytest.raises(ValueError, match="45"):
        logic.ctit_buckets({45: 1})


@given(st.lists(st.timedeltas(min_value=timedelta(days=-40), max_value=timedelta(days=40))))
def test_ctit_buckets_count_each_install_in_every_bucket_whose_bound_holds_it(
    ctits: list[timedelta],
) -> None:
    counts: dict[int | None, int] = {}
    for ctit in ctits:
        bound = logic.ctit_bound(ctit)
        counts[bound] = counts.get(bound, 0) + 1
    for bucket in logic.ctit_buckets(counts):
        le = bucket["le_seconds"]
        expected = sum(1 for c in ctits if le is None or c <= timedelta(seconds=le))
        assert bucket["count"] == expected


def test_ctit_csv_rows_spell_the_last_bound_as_prometheus_does() -> None:
    rows = logic.ctit_csv_rows(logic.ctit_buckets({10: 1}))
    assert rows[0] == {"le_seconds": 0, "count": 0}
    assert rows[1] == {"le_seconds": 10, "count": 1}
    assert rows[-1] == {"le_seconds": "+Inf", "count": 1}
    text = logic.to_csv(rows, ["le_seconds", "count"])
    assert text.splitlines()[0] == "le_seconds,count"
    assert text.splitlines()[-1] == "+Inf,1"


def test_user_list_kinds_and_columns() -> None:
    assert logic.USER_LIST_KINDS == {
        "installed": ("new_user", "new_device", "reattribution"),
        "reinstalled": ("reinstall",),
    }
    base = ("user_key", "user_id", "device_id", "adid", "install_ts", "kind", "status")
    assert logic.user_list_columns("installed") == base
    assert logic.user_list_columns("reinstalled") == base
    assert logic.user_list_columns("uninstalled") == (*base, "uninstall_ts")


def test_user_list_row_of_a_known_user() -> None:
    row = {
        "user_key": "u-1001",
        "device_id": "dev-1",
        "adid": "38400000-8cf0-11bd-b23e-10b96e40000d",
        "install_ts": datetime(2026, 11, 30, 8, 30, 0, 123000, tzinfo=UTC),
        "kind": "new_user",
        "status": "verified",
        "uninstall_ts": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    }
    columns = logic.user_list_columns("uninstalled")
    assert logic.user_list_row(row, columns) == [
        "u-1001",
        "u-1001",
        "dev-1",
        "38400000-8cf0-11bd-b23e-10b96e40000d",
        "2026-11-30T08:30:00.123Z",
        "new_user",
        "verified",
        "2026-12-01T09:00:00.000Z",
    ]


def test_user_list_row_of_an_anonymous_device_without_adid() -> None:
    row = {
        "user_key": "d:dev-2",
        "device_id": "dev-2",
        "adid": "",
        "install_ts": datetime(2026, 11, 30, 8, 30),  # naive: taken as UTC
        "kind": "reinstall",
        "status": "attributed",
    }
    assert logic.user_list_row(row, logic.user_list_columns("reinstalled")) == [
        "d:dev-2",
        "",
        "dev-2",
        "",
        "2026-11-30T08:30:00.000Z",
        "reinstall",
        "attributed",
    ]


def test_user_list_row_missing_values_are_empty() -> None:
    assert logic.user_list_row({}, ("user_key", "user_id", "adid")) == ["", "", ""]


def test_iso_utc_converts_other_zones() -> None:
    tehran = timezone(timedelta(hours=3, minutes=30))
    assert logic.iso_utc(datetime(2026, 11, 30, 12, 0, tzinfo=tehran)) == (
        "2026-11-30T08:30:00.000Z"
    )


def test_csv_lines_quote_what_needs_it_and_keep_persian() -> None:
    rows = [["u,1", 'say "hi"', None, "کاربر", 3]]
    text = logic.csv_lines(rows)
    assert text == '"u,1","say ""hi""",,کاربر,3\n'
    assert list(csv.reader(io.StringIO(text))) == [["u,1", 'say "hi"', "", "کاربر", "3"]]
    assert logic.csv_lines([]) == ""


def test_unchosen_postback_events() -> None:
    assert logic.unchosen_postback_events(["$purchase", "signup"], {"signup": ["u"]}) == []
    assert logic.unchosen_postback_events(["$purchase"], {"z": [], "a": ["u"]}) == ["a", "z"]
    assert logic.unchosen_postback_events([], {}) == []
