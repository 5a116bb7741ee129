"""Postback rules: macro filling and encoding, the install an event is credited to, what
happens to an event, which templates it goes to, and the per-network limiter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.runtime.ratelimit import TokenBuckets
from services.attribution import postback_rules as rules
from services.attribution.postback_rules import (
    DROP,
    HOLD,
    SEND,
    EventFacts,
    InstallRef,
    event_templates,
    event_verdict,
    merge,
    money,
    owning_install,
    postback_url,
)
from services.attribution.postbacks import NetworkLimiter

T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def install(
    n: int, at: datetime, status: str = "attributed", tracker: str | None = "tokA", **kw: object
) -> InstallRef:
    return InstallRef(
        install_event_id=f"i{n}",
        attribution_id=f"a{n}",
        install_ts=at,
        attributed_at=kw.pop("attributed_at", at),  # type: ignore[arg-type]
        status=status,
        tracker_token=tracker,
        **kw,  # type: ignore[arg-type]
    )


# --- URLs -------------------------------------------------------------------------------


def test_postback_url_fills_and_encodes_macros() -> None:
    url = postback_url(
        "https://n.example/pb?c={click_id}&camp={campaign}&r={revenue}&keep={other}",
        {"click_id": "a b&c", "campaign": "پاییز", "revenue": None},
    )
    assert url == (
        "https://n.example/pb?c=a%20b%26c&camp=%D9%BE%D8%A7%DB%8C%DB%8C%D8%B2&r=&keep={other}"
    )


def test_postback_url_fills_macros_the_url_validator_encoded_in_the_path() -> None:
    # AnyHttpUrl turns "/pb/{event}" into "/pb/%7Bevent%7D"; the macro still works.
    url = postback_url(
        "https://n.example/pb/%7Bevent%7D/%7btracker%7D?e={event}", {"event": "$purchase/x"}
    )
    assert url == "https://n.example/pb/%24purchase%2Fx/?e=%24purchase%2Fx"


def test_a_value_that_spells_a_macro_is_not_filled_again() -> None:
    url = postback_url("https://n.example/?e={event}&c={campaign}", {"event": "{campaign}"})
    assert url == "https://n.example/?e=%7Bcampaign%7D&c="


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_every_value_is_one_encoded_query_value(value: str) -> None:
    url = postback_url("https://n.example/pb?v={user_key}&z=1", {"user_key": value})
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert query == {"v": [value], "z": ["1"]}


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (None, None),
        (125000000.0, "125000000"),
        (9.99, "9.99"),
        (-49.0, "-49"),
        (0.0, "0"),
        (-0.0, "0"),
        (1e20, "100000000000000000000"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_money_is_plain_decimal_text(amount: float | None, text: str | None) -> None:
    assert money(amount) == text


def test_install_values_name_the_install() -> None:
    values = rules.install_values(
        click_id="c1",
        tracker="tokA",
        network="Yektanet",
        campaign=None,
        adid=None,
        install_ts=T,
        install_event_id="i1",
        user_key="d:dev",
    )
    assert values["event"] == "install" and values["event_id"] == "i1"
    assert values["install_ts"] == values["event_ts"] == "2024-05-01T12:00:00+00:00"
    assert values["revenue"] is values["currency"] is None


def test_event_values_combine_the_event_and_its_install() -> None:
    event = EventFacts(
        event_id="e1",
        name="$purchase",
        ts=T + H,
        user_key="u-1",
        adid="ad-event",
        revenue=125000.5,
        currency="IRR",
    )
    values = rules.event_values(
        event,
        install(1, T, click_id="c1"),
        tracker="tokA",
        network="Yektanet",
        campaign="پاییز",
    )
    assert values == {
        "click_id": "c1",
        "tracker": "tokA",
        "network": "Yektanet",
        "campaign": "پاییز",
        "adid": "ad-event",  # the install had none
        "install_ts": "2024-05-01T12:00:00+00:00",
        "event": "$purchase",
        "event_id": "e1",
        "event_ts": "2024-05-01T13:00:00+00:00",
        "revenue": "125000.5",
        "currency": "IRR",
        "user_key": "u-1",
    }
    assert rules.event_values(
        event, install(1, T, adid="ad-install"), tracker="t", network=None, campaign=None
    )["adid"] == ("ad-install")


def test_event_templates() -> None:
    tracker = {
        "postback_urls": ["https://n/pb?e={event}"],
        "postback_events": ["$purchase", "signup"],
        "event_postback_urls": {"signup": ["https://n/signup", "https://m/s"]},
    }
    assert event_templates("$purchase", **tracker) == ["https://n/pb?e={event}"]  # type: ignore[arg-type]
    assert event_templates("signup", **tracker) == ["https://n/signup", "https://m/s"]  # type: ignore[arg-type]
    assert event_templates("level_up", **tracker) == []  # type: ignore[arg-type]


def test_limit_key_is_the_network_else_the_host() -> None:
    assert rules.limit_key(" Yektanet ", "https://a/") == rules.limit_key("yektanet", "https://b/")
    assert rules.limit_key(None, "https://Net.example:8443/pb") == "host:net.example"
    assert rules.limit_key("", "https://n.example/") == "host:n.example"


@pytest.mark.parametrize(
    ("status", "invalid", "settled"),
    [
        (200, False, True),
        (204, False, True),
        (404, False, True),
        (429, False, False),
        (500, False, False),
        (302, False, False),
        (None, False, False),
        (None, True, True),
    ],
)
def test_call_settled(status: int | None, invalid: bool, settled: bool) -> None:
    assert rules.call_settled(status, invalid_url=invalid) is settled


# --- which install an event is credited to -----------------------------------------------


def test_owning_install_is_the_latest_at_or_before_the_event() -> None:
    first, second = install(1, T), install(2, T + 2 * H, tracker="tokB")
    assert owning_install([second, first], T + H) == first
    assert owning_install([first, second], T + 2 * H) == second  # at the instant: the new one
    assert owning_install([first, second], T - H) == first  # device clock behind: the first
    assert owning_install([], T) is None


def test_rejected_installs_are_passed_over() -> None:
    honest, fraud = install(1, T), install(2, T + H, status="rejected", tracker="tokB")
    assert owning_install([honest, fraud], T + 2 * H) == honest
    assert owning_install([fraud], T + 2 * H) is None


def test_merge_takes_the_newer_statement_of_an_install() -> None:
    ledger = install(1, T, status="pending", adid="ad1")
    verified = install(1, T, status="verified", attributed_at=T + H)
    assert merge([ledger], verified) == [install(1, T, "verified", attributed_at=T + H, adid="ad1")]
    # A stale statement (it overtook nothing: the ledger is newer) changes nothing.
    assert merge([verified], ledger) == [verified]
    assert merge([], ledger) == [ledger]
    other = install(2, T + H)
    assert merge([other], ledger) == [other, ledger]


CHOSEN = {"tokA": frozenset({"$purchase"}), "tokB": frozenset({"signup"})}


@pytest.mark.parametrize(
    ("installs", "name", "action"),
    [
        ([], "$purchase", HOLD),  # the install is not recorded yet
        ([install(1, T)], "$purchase", SEND),
        ([install(1, T, status="verified")], "$purchase", SEND),
        ([install(1, T, status="pending")], "$purchase", HOLD),
        ([install(1, T, status="unverified")], "$purchase", DROP),
        ([install(1, T, status="rejected")], "$purchase", DROP),
        ([install(1, T, tracker=None)], "$purchase", DROP),  # organic
        ([install(1, T)], "signup", DROP),  # tokA did not choose it
        ([install(1, T, tracker="tokC")], "$purchase", DROP),  # tokC posts back nothing
        # Reattributed to tokB later: its events are tokB's.
        ([install(1, T), install(2, T + H / 2, tracker="tokB")], "signup", SEND),
    ],
)
def test_event_verdict(installs: list[InstallRef], name: str, action: str) -> None:
    verdict = event_verdict(installs, name=name, at=T + H, chosen=CHOSEN)
    assert verdict.action == action
    if action == SEND:
        assert verdict.install == owning_install(installs, T + H)


# --- the per-network limiter ---------------------------------------------------------------


def test_limiter_spaces_calls_to_one_network_and_not_others() -> None:
    clock = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = NetworkLimiter(
        TokenBuckets(rate_per_s=4, burst=2), clock=lambda: clock[0], sleep=sleep
    )

    async def calls() -> list[tuple[str, float]]:
        times = []
        for key in ("network:a", "network:a", "network:a", "network:b", "network:a"):
            await limiter.wait(key)
            times.append((key, clock[0]))
        return times

    times = asyncio.run(calls())
    # A burst of two, then one every 1/4 s; another network is not held up.
    assert times == [
        ("network:a", 100.0),
        ("network:a", 100.0),
        ("network:a", 100.25),
        ("network:b", 100.25),
        ("network:a", 100.5),
    ]
    assert slept == [0.25, 0.25]
