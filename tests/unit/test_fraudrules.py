"""Tracker-level fraud rules shared by attribution and admin: the conversion flag and
the settings it is read from."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from libs.runtime.fraudrules import (
    LOW_CONVERSION,
    ConversionRule,
    conversion_rule,
    low_conversion,
    tracker_flags,
)

DEFAULT = ConversionRule()


def test_low_conversion_per_tracker() -> None:
    assert not low_conversion(clicks=999, installs=0, rule=DEFAULT)  # too few to judge
    assert low_conversion(clicks=1000, installs=0, rule=DEFAULT)
    assert not low_conversion(clicks=1000, installs=1, rule=DEFAULT)  # exactly 0.1%
    assert low_conversion(clicks=100_000, installs=99, rule=DEFAULT)
    assert not low_conversion(clicks=0, installs=0, rule=ConversionRule(min_clicks=0))


def test_tracker_flags_name_the_rule() -> None:
    rule = ConversionRule(min_conversion=0.5, min_clicks=4)
    assert tracker_flags(clicks=4, installs=1, conversion=rule) == [LOW_CONVERSION]
    assert tracker_flags(clicks=4, installs=2, conversion=rule) == []  # exactly 50 %
    assert tracker_flags(clicks=3, installs=0, conversion=rule) == []  # too few clicks


def test_conversion_rule_reads_the_apps_settings() -> None:
    assert conversion_rule({}) == DEFAULT
    assert conversion_rule({"min_conversion": 0.02, "min_clicks_for_conversion": 50}) == (
        ConversionRule(min_conversion=0.02, min_clicks=50)
    )
    assert conversion_rule({"min_conversion": 1, "min_clicks_for_conversion": 7.0}) == (
        ConversionRule(min_conversion=1.0, min_clicks=7)
    )


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.text(max_size=5),
        st.integers(max_value=-1),
        st.lists(st.none()),
    )
)
def test_conversion_rule_ignores_what_it_cannot_use(value: object) -> None:
    assert conversion_rule({"min_conversion": value, "min_clicks_for_conversion": value}) == DEFAULT
