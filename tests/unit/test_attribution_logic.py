"""Attribution rules: the click id inside a store referrer and the click-window decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.attribution.logic import (
    CLICK_WINDOW,
    MAX_REFERRER,
    ClickFacts,
    Decision,
    attribution_id,
    decide,
    referrer_click_id,
)
from services.tracker.logic import redirect_url, referrer_value

INSTALL = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def click(ts: datetime, click_id: str = "c1") -> ClickFacts:
    return ClickFacts(click_id=click_id, tracker_token="tok", ts=ts)


# --- referrer_click_id --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        ("click_id=c_01HZX&hodhod_tracker=tok", "c_01HZX"),
        ("hodhod_tracker=tok&click_id=c_01HZX", "c_01HZX"),
        ("click_id=c_01HZX", "c_01HZX"),
        ("utm_source=google-play&utm_medium=organic&click_id=abc", "abc"),
        ("click_id=first&click_id=second", "first"),
        ("click_id=%20padded%20", "padded"),
        ("click_id=a%2Bb", "a+b"),
        ("click_id=سلام", "سلام"),
    ],
)
def test_raw_referrer(referrer: str, expected: str) -> None:
    assert referrer_click_id(referrer) == expected


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        ("click_id%3Dc_01HZX%26hodhod_tracker%3Dtok", "c_01HZX"),
        ("hodhod_tracker%3Dtok%26click_id%3Dc_01HZX", "c_01HZX"),
        ("click_id%3Da%252Bb", "a+b"),
        ("CLICK_ID%3Dx%26click_id%3Dy", "y"),
    ],
)
def test_url_encoded_referrer(referrer: str, expected: str) -> None:
    assert referrer_click_id(referrer) == expected


@pytest.mark.parametrize(
    "click_id", ["c_01HZX3K9V7Q2M8R4T6Y1B5N0PA", "a&b=c", "a+b", "a b", "c%41", "سلام"]
)
def test_reads_what_the_tracker_writes(click_id: str) -> None:
    assert referrer_click_id(referrer_value(click_id, "tok")) == click_id
    assert referrer_click_id(quote(referrer_value(click_id, "tok"), safe="")) == click_id


def test_reads_the_referrer_of_a_tracker_redirect() -> None:
    from urllib.parse import parse_qs, urlsplit

    url = redirect_url("https://play.google.com/store/apps/details?id=ir.app", "c42", "tok")
    referrer = parse_qs(urlsplit(url).query)["referrer"][0]
    assert referrer_click_id(referrer) == "c42"


@pytest.mark.parametrize(
    "referrer",
    [
        None,
        "",
        "utm_source=google-play&utm_medium=organic",
        "click_id=",
        "click_id",
        "click_id=%20%20",
        "hodhod_click_id=c1",
        "xclick_id=c1",
        "CLICK_ID=c1",
    ],
)
def test_missing_click_id(referrer: str | None) -> None:
    assert referrer_click_id(referrer) is None


@pytest.mark.parametrize(
    "referrer",
    [
        "%%%",
        "%",
        "&&&",
        "===",
        "click_id%3",
        "\x00\x01",
        "%E0%A4%A",
        "click_id=%ZZ",
        "????",
        "%ff%fe",
    ],
)
def test_garbage_never_raises(referrer: str) -> None:
    result = referrer_click_id(referrer)
    assert result is None or (isinstance(result, str) and result.isprintable())


@pytest.mark.parametrize(
    "referrer",
    [
        "click_id=a%00b",
        "click_id=a%0Ab",
        "click_id=%07",
        "click_id=a\tb",
        "click_id%3Da%2500b",
        "click_id=a%E2%80%8Bb",
    ],
)
def test_non_printable_click_id_is_refused(referrer: str) -> None:
    assert referrer_click_id(referrer) is None


def test_click_id_length_limit() -> None:
    assert referrer_click_id("click_id=" + "a" * 128) == "a" * 128
    assert referrer_click_id("click_id=" + "a" * 129) is None


def test_oversize_referrer_is_refused() -> None:
    base = "click_id=c1&pad="
    exact = base + "x" * (MAX_REFERRER - len(base))
    assert len(exact) == MAX_REFERRER
    assert referrer_click_id(exact) == "c1"
    assert referrer_click_id(exact + "x") is None


@given(st.text(max_size=300))
def test_never_raises_on_any_text(referrer: str) -> None:
    result = referrer_click_id(referrer)
    assert result is None or (
        0 < len(result) <= 128 and result.isprintable() and result == result.strip()
    )


@given(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=128).filter(
        lambda s: s.strip() == s and s.isprintable()
    )
)
def test_tracker_round_trip_property(click_id: str) -> None:
    assert referrer_click_id(referrer_value(click_id, "tok")) == click_id


# --- decide -------------------------------------------------------------------------------


def test_click_inside_window_is_attributed() -> None:
    c = click(INSTALL - timedelta(hours=1))
    assert decide(install_ts=INSTALL, click=c) == Decision("click_id", "new_user", "attributed", c)


def test_window_boundary_is_inclusive() -> None:
    assert CLICK_WINDOW == timedelta(days=7)
    c = click(INSTALL - timedelta(days=7))
    assert decide(install_ts=INSTALL, click=c).method == "click_id"


def test_one_microsecond_past_the_window_is_organic() -> None:
    c = click(INSTALL - timedelta(days=7, microseconds=1))
    d = decide(install_ts=INSTALL, click=c)
    assert d == Decision("organic", "organic", "attributed", None)


def test_click_at_the_install_instant_is_attributed() -> None:
    assert decide(install_ts=INSTALL, click=click(INSTALL)).method == "click_id"


@pytest.mark.parametrize(
    "after", [timedelta(microseconds=1), timedelta(seconds=1), timedelta(days=1)]
)
def test_click_after_install_is_organic(after: timedelta) -> None:
    d = decide(install_ts=INSTALL, click=click(INSTALL + after))
    assert (d.method, d.kind, d.click) == ("organic", "organic", None)


def test_no_click_is_organic() -> None:
    assert decide(install_ts=INSTALL, click=None) == Decision(
        "organic", "organic", "attributed", None
    )


def test_custom_window() -> None:
    c = click(INSTALL - timedelta(hours=25))
    assert decide(install_ts=INSTALL, click=c, window=timedelta(days=1)).method == "organic"
    assert decide(install_ts=INSTALL, click=c, window=timedelta(hours=25)).method == "click_id"


def test_zero_window_only_matches_the_same_instant() -> None:
    assert decide(install_ts=INSTALL, click=click(INSTALL), window=timedelta(0)).method == (
        "click_id"
    )
    c = click(INSTALL - timedelta(microseconds=1))
    assert decide(install_ts=INSTALL, click=c, window=timedelta(0)).method == "organic"


def test_time_zones_do_not_matter() -> None:
    tehran = timezone(timedelta(hours=3, minutes=30))
    c = click((INSTALL - timedelta(days=7)).astimezone(tehran))
    assert decide(install_ts=INSTALL, click=c).method == "click_id"
    c = click((INSTALL + timedelta(seconds=1)).astimezone(tehran))
    assert decide(install_ts=INSTALL, click=c).method == "organic"


@given(st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=30)))
def test_decide_property(click_to_install: timedelta) -> None:
    d = decide(install_ts=INSTALL, click=click(INSTALL - click_to_install))
    inside = timedelta(0) <= click_to_install <= CLICK_WINDOW
    assert d.method == ("click_id" if inside else "organic")
    assert (d.click is not None) == inside
    assert d.status == "attributed"


def _parsed_click_id(referrer: str | None) -> str | None:
    """``referrer_click_id`` as parse_qs reads every referrer (no shortcut)."""
    if not referrer or len(referrer) > MAX_REFERRER:
        return None
    for candidate in (referrer, unquote(referrer)):
        values = parse_qs(candidate, keep_blank_values=False).get("click_id")
        if values:
            click_id = values[0].strip()
            if 0 < len(click_id) <= 128 and click_id.isprintable():
                return click_id
    return None


@given(
    st.lists(
        st.sampled_from(["click_id", "=", "&", "c1", " ", "%3D", "%26", "+", "x", "\t", "é"]),
        max_size=12,
    ).map("".join)
    | st.text(max_size=40)
)
def test_referrer_click_id_is_what_parse_qs_reads(referrer: str) -> None:
    assert referrer_click_id(referrer) == _parsed_click_id(referrer)


# --- attribution_id -----------------------------------------------------------------------


def test_attribution_id_is_deterministic() -> None:
    a = attribution_id("digikala", "i_1", "c_1")
    assert a == attribution_id("digikala", "i_1", "c_1")
    assert len(a) == 32 and int(a, 16) >= 0


def test_attribution_id_is_stable_across_releases() -> None:
    # Pinned: changing it would re-emit every attribution under a new id.
    import uuid

    ns = uuid.UUID("6f1c1c49-0d0a-4d3e-9a59-8f3f1f5b7d01")
    assert attribution_id("a", "i", "c") == uuid.uuid5(ns, '["a", "i", "c"]').hex


@pytest.mark.parametrize(
    "other",
    [
        ("app2", "i_1", "c_1"),
        ("digikala", "i_2", "c_1"),
        ("digikala", "i_1", "c_2"),
        ("digikala", "i_1", None),
    ],
)
def test_attribution_id_differs_per_input(other: tuple[str, str, str | None]) -> None:
    assert attribution_id("digikala", "i_1", "c_1") != attribution_id(*other)


@given(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="ascii"), max_size=12),
    st.none() | st.text(max_size=12),
)
def test_attribution_id_is_the_uuid5_of_the_json_list(
    app_id: str, install_event_id: str, click_id: str | None
) -> None:
    """Ids written without the JSON encoder (plain ASCII) and with it (quotes,
    backslashes, control and non-ASCII characters) are the documented uuid5."""
    import json
    import uuid

    ns = uuid.UUID("6f1c1c49-0d0a-4d3e-9a59-8f3f1f5b7d01")
    expected = uuid.uuid5(ns, json.dumps([app_id, install_event_id, click_id])).hex
    assert attribution_id(app_id, install_event_id, click_id) == expected


def test_attribution_id_organic_differs_from_an_empty_click_id() -> None:
    assert attribution_id("a", "i", None) != attribution_id("a", "i", "")


def test_attribution_id_has_no_separator_collisions() -> None:
    assert attribution_id("a", "i|x", "y") != attribution_id("a", "i", "x|y")
