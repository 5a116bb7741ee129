"""Fraud rules: each reason on its own, its edges, the CIDR parser and the combination."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.runtime.fraudrules import ConversionRule
from libs.runtime.signing import Verdict
from services.attribution import fraud
from services.attribution.fraud import (
    REASONS,
    FraudConfig,
    InstallSignals,
    NetworkSet,
    check_install,
    is_bot,
    is_click_injection,
    parse_networks,
)

T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DEFAULT = FraudConfig()
DC = parse_networks("# cloud\n3.0.0.0/8\n2600:1f00::/24\n").networks


def signals(**kw: object) -> InstallSignals:
    return InstallSignals(install_ts=T, **kw)  # type: ignore[arg-type]


def reasons(config: FraudConfig = DEFAULT, **kw: object) -> list[str]:
    return check_install(signals(**kw), config, datacenter=DC)


def test_clean_install_has_no_reasons() -> None:
    assert reasons() == []
    assert reasons(ip="5.160.12.34", user_agent="Dalvik/2.1.0 (Linux; U; Android 13)") == []
    assert reasons(click_ts=T - timedelta(minutes=5), clicks_per_hour=3) == []


def test_reason_codes_are_stable() -> None:
    assert REASONS == (
        "bad_signature",
        "blocked_ip",
        "datacenter_ip",
        "bot",
        "emulator",
        "rooted",
        "click_injection",
        "click_spamming",
        "device_farm",
    )


# --- click injection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctit", "injected"),
    [
        (timedelta(seconds=10), False),
        (timedelta(seconds=10) - timedelta(microseconds=1), True),
        (timedelta(seconds=1), True),
        (timedelta(0), True),
        (-timedelta(seconds=5), True),  # negative click-to-install time: click after install
        (timedelta(hours=3), False),
    ],
)
def test_click_to_install_time(ctit: timedelta, injected: bool) -> None:
    assert (reasons(click_ts=T - ctit) == ["click_injection"]) is injected


def test_install_began_before_the_click() -> None:
    click = T - timedelta(minutes=10)
    assert reasons(click_ts=click, install_begin_ts=click - timedelta(seconds=1)) == [
        "click_injection"
    ]
    assert reasons(click_ts=click, install_begin_ts=click) == []
    assert reasons(click_ts=click, install_begin_ts=click + timedelta(seconds=30)) == []


def test_no_click_no_injection() -> None:
    assert reasons(install_begin_ts=T - timedelta(days=1)) == []
    assert not is_click_injection(
        install_ts=T, click_ts=None, install_begin_ts=T, min_click_to_install=timedelta(1)
    )


def test_injection_threshold_is_configurable() -> None:
    config = FraudConfig(min_click_to_install=timedelta(seconds=30))
    assert reasons(config, click_ts=T - timedelta(seconds=20)) == ["click_injection"]
    off = FraudConfig(min_click_to_install=timedelta(0))
    assert reasons(off, click_ts=T) == []


@given(
    st.timedeltas(min_value=timedelta(hours=-1), max_value=timedelta(hours=1)),
    st.one_of(st.none(), st.timedeltas(min_value=timedelta(hours=-1), max_value=timedelta(0))),
)
def test_injection_property(ctit: timedelta, begin_from_install: timedelta | None) -> None:
    click = T - ctit
    begin = None if begin_from_install is None else T + begin_from_install
    expected = ctit < timedelta(seconds=10) or (begin is not None and begin < click)
    assert ("click_injection" in reasons(click_ts=click, install_begin_ts=begin)) is expected


# --- click spamming -------------------------------------------------------------------------


def test_click_spamming_is_more_than_n() -> None:
    click = T - timedelta(hours=2)
    n = DEFAULT.max_clicks_per_hour
    assert reasons(click_ts=click, clicks_per_hour=n) == []
    assert reasons(click_ts=click, clicks_per_hour=n + 1) == ["click_spamming"]
    assert reasons(clicks_per_hour=n + 1) == []  # organic: no click to blame
    assert reasons(FraudConfig(max_clicks_per_hour=2), click_ts=click, clicks_per_hour=3) == [
        "click_spamming"
    ]


# --- IPs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("3.1.2.3", ["datacenter_ip"]),
        ("::ffff:3.1.2.3", ["datacenter_ip"]),
        ("2600:1f00::1", ["datacenter_ip"]),
        ("2600:1fff:ffff::1", ["datacenter_ip"]),
        ("2600:2000::1", []),
        ("4.0.0.0", []),
        ("2.255.255.255", []),
        ("not an ip", []),
        ("", []),
        ("3.1.2.3/32", []),
    ],
)
def test_datacenter_ip(ip: str, expected: list[str]) -> None:
    assert reasons(ip=ip) == expected


def test_datacenter_check_can_be_turned_off() -> None:
    assert reasons(FraudConfig(reject_datacenter=False), ip="3.1.2.3") == []


def test_blocked_ips_per_app() -> None:
    config = FraudConfig(blocked_ips=parse_networks("5.160.12.34\n2001:db8::/32").networks)
    assert reasons(config, ip="5.160.12.34") == ["blocked_ip"]
    assert reasons(config, ip="5.160.12.35") == []
    assert reasons(config, ip="2001:db8:1::9") == ["blocked_ip"]
    assert reasons(config, ip="3.0.0.1") == ["datacenter_ip"]


def test_parser_tolerates_comments_blank_lines_and_garbage() -> None:
    text = "\n".join(
        [
            "# AWS",  # 1
            "",  # 2
            "   3.0.0.0/8   # us-east",  # 3
            "10.1.2.3/8",  # 4: host bits set, still 10.0.0.0/8
            "2001:db8::/32",  # 5
            "not-a-cidr",  # 6
            "300.1.1.1/8",  # 7
            "1.2.3.0/33",  # 8
            "\t",  # 9
            "192.0.2.7",  # 10: a bare address is a /32
            "1.2.3.0/24 extra",  # 11
            "\ufeff",  # 12: byte-order mark
            "fe80::1/129",  # 13
        ]
    )
    parsed = parse_networks(text)
    assert parsed.bad_lines == (6, 7, 8, 11, 12, 13)
    for ip in ("3.255.0.1", "10.200.0.1", "2001:db8:ffff::1", "192.0.2.7"):
        assert ip in parsed.networks
    for ip in ("192.0.2.8", "11.0.0.1", "2001:db9::1", "1.2.3.4"):
        assert ip not in parsed.networks


def test_parser_windows_line_endings_and_empty() -> None:
    assert "1.1.1.1" in parse_networks("1.1.1.0/24\r\n# x\r\n").networks
    empty = parse_networks("")
    assert len(empty.networks) == 0 and empty.bad_lines == ()
    assert "1.1.1.1" not in empty.networks


def test_network_set_merges_overlaps_and_ignores_non_strings() -> None:
    nets = NetworkSet(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "10.1.0.0/16", "11.0.0.0/8"))
    assert len(nets) == 1  # 10/8 and 11/8 merge into 10.0.0.0/7
    assert 1 not in nets and None not in nets


def test_large_list_lookup_is_fast() -> None:
    text = "\n".join(f"{a}.{b}.0.0/16" for a in range(1, 200, 2) for b in range(0, 256, 2))
    nets = parse_networks(text).networks
    start = time.perf_counter()
    for _ in range(10_000):
        assert "1.2.3.4" in nets and "2.0.0.1" not in nets
    assert time.perf_counter() - start < 1.0


@given(st.lists(st.ip_addresses(), max_size=20), st.ip_addresses())
def test_network_set_agrees_with_ipaddress(members: list, probe) -> None:  # type: ignore[no-untyped-def]
    nets = [ipaddress.ip_network(m) for m in members]
    expected = any(probe in n for n in nets if n.version == probe.version)
    mapped = getattr(probe, "ipv4_mapped", None)
    if mapped is not None:
        expected = any(mapped in n for n in nets if n.version == 4)
    assert (str(probe) in NetworkSet(nets)) is expected


@given(st.text(max_size=500))
def test_parser_never_raises(text: str) -> None:
    parsed = parse_networks(text)
    assert all(1 <= n <= len(text.splitlines()) for n in parsed.bad_lines)


# --- user agents, device flags, signature, device farms ------------------------------------


@pytest.mark.parametrize(
    "ua",
    [
        "curl/8.4.0",
        "python-requests/2.31",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 HeadlessChrome/124.0",
        "Go-http-client/1.1",
        "Java/17.0.2",
        "Scrapy/2.11",
    ],
)
def test_bot_user_agents(ua: str) -> None:
    assert is_bot(ua) and reasons(user_agent=ua) == ["bot"]


@pytest.mark.parametrize(
    "ua",
    [
        None,
        "",
        "Dalvik/2.1.0 (Linux; U; Android 13; SM-A536E Build/TP1A.220624.014)",
        "okhttp/4.12.0",
        "MyApp/5.12 CFNetwork/1494.0.7 Darwin/23.4.0",
        "Mozilla/5.0 (Linux; Android 12; CUBOT KINGKONG 7) AppleWebKit/537.36",
    ],
)
def test_app_user_agents_are_not_bots(ua: str | None) -> None:
    assert not is_bot(ua)


def test_huge_user_agent() -> None:
    huge = "Dalvik/2.1.0 " + "a" * 100_000 + " curl/8"
    start = time.perf_counter()
    assert reasons(user_agent=huge) == []  # the bot marker is past the 2,048 characters read
    assert reasons(user_agent="curl/8 " + "a" * 100_000) == ["bot"]
    assert time.perf_counter() - start < 0.5


def test_bots_check_can_be_turned_off() -> None:
    assert reasons(FraudConfig(reject_bots=False), user_agent="curl/8") == []


def test_emulator_and_rooted() -> None:
    assert reasons(is_emulator=True) == ["emulator"]
    assert reasons(is_rooted=True) == ["rooted"]
    config = FraudConfig(reject_emulators=False, reject_rooted=False)
    assert reasons(config, is_emulator=True, is_rooted=True) == []


@pytest.mark.parametrize(
    ("verdict", "bad"),
    [
        (None, True),
        (Verdict("ok", "k"), False),
        (Verdict("missing"), True),
        (Verdict("malformed"), True),
        (Verdict("stale"), True),
        (Verdict("bad_signature"), True),
        (Verdict("replay"), True),
    ],
)
def test_signature_required(verdict: Verdict | None, bad: bool) -> None:
    assert (
        reasons(FraudConfig(require_signature=True), signature=verdict) == ["bad_signature"]
    ) is bad
    assert reasons(signature=verdict) == []  # not required: ignored


def test_device_farm_is_more_than_n_installs_per_ip_hour() -> None:
    n = DEFAULT.max_installs_per_ip_hour
    assert reasons(installs_from_ip_last_hour=n) == []
    assert reasons(installs_from_ip_last_hour=n + 1) == ["device_farm"]
    assert reasons(FraudConfig(max_installs_per_ip_hour=1), installs_from_ip_last_hour=2) == [
        "device_farm"
    ]


def test_every_reason_at_once_in_stable_order() -> None:
    config = FraudConfig(require_signature=True, blocked_ips=DC)
    got = reasons(
        config,
        ip="3.3.3.3",
        user_agent="curl/8",
        is_emulator=True,
        is_rooted=True,
        click_ts=T,
        clicks_per_hour=1000,
        installs_from_ip_last_hour=1000,
        signature=Verdict("replay"),
    )
    assert got == list(fraud.REASONS)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT.max_clicks_per_hour = 1  # type: ignore[misc]


# --- per-app settings as admin stores them ----------------------------------------------


def test_config_from_empty_settings_is_the_default() -> None:
    assert fraud.config_from({}) == FraudConfig()
    assert fraud.config_from({}, require_signature=True).require_signature is True


def test_config_from_reads_every_setting() -> None:
    config = fraud.config_from(
        {
            "min_click_to_install_s": 3,
            "max_clicks_per_hour": 5,
            "max_installs_per_ip_hour": 2,
            "min_conversion": 0.01,
            "min_clicks_for_conversion": 50,
            "reject_datacenter": False,
            "reject_bots": False,
            "reject_emulators": False,
            "reject_rooted": False,
            "blocked_ips": ["198.51.100.0/24", "2001:db8::1"],
        }
    )
    assert config.min_click_to_install == timedelta(seconds=3)
    assert (config.max_clicks_per_hour, config.max_installs_per_ip_hour) == (5, 2)
    assert config.conversion == ConversionRule(min_conversion=0.01, min_clicks=50)
    assert (
        not (config.reject_datacenter or config.reject_bots or config.reject_emulators)
        and not config.reject_rooted
    )
    assert "198.51.100.77" in config.blocked_ips and "2001:db8::1" in config.blocked_ips
    assert "198.51.101.1" not in config.blocked_ips


@pytest.mark.parametrize(
    "stored",
    [
        {"min_click_to_install_s": "ten"},
        {"min_click_to_install_s": -1},
        {"max_clicks_per_hour": True},
        {"reject_bots": "no"},
        {"blocked_ips": "10.0.0.0/8"},
        {"blocked_ips": [7, None]},
        {"unknown": 1},
        {"max_clicks_per_hour": None},
    ],
)
def test_config_from_ignores_what_it_cannot_use(stored: dict[str, object]) -> None:
    config = fraud.config_from(stored)
    assert config.min_click_to_install == DEFAULT.min_click_to_install
    assert config.max_clicks_per_hour == DEFAULT.max_clicks_per_hour
    assert config.reject_bots is True
    assert len(config.blocked_ips) == 0


def test_settings_change_the_verdict() -> None:
    quick = {"click_ts": T - timedelta(seconds=2)}
    assert reasons(**quick) == ["click_injection"]
    assert reasons(fraud.config_from({"min_click_to_install_s": 0}), **quick) == []
    assert reasons(fraud.config_from({"blocked_ips": ["5.160.0.0/16"]}), ip="5.160.12.34") == [
        "blocked_ip"
    ]


@pytest.mark.parametrize(
    ("ip", "countable"),
    [
        ("5.160.12.34", True),
        ("2a01:5ec0::1", True),
        ("::ffff:5.160.12.34", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.9", False),
        ("100.64.0.1", False),  # carrier-grade NAT, shared by many subscribers
        ("fe80::1", False),
        ("::1", False),
        ("not an ip", False),
        ("", False),
        (None, False),
    ],
)
def test_only_public_addresses_are_counted_per_ip(ip: str | None, countable: bool) -> None:
    assert fraud.countable_ip(ip) is countable


def test_counting_an_ip_agrees_with_the_stdlib_on_every_first_octet() -> None:
    """The fast path for IPv4 addresses outside the special-purpose blocks answers what
    ``ipaddress``'s ``is_global`` answers, at both ends and inside every /8 and around the
    small special blocks."""
    samples = [f"{o}.{b}" for o in range(256) for b in ("0.0.0", "1.2.3", "255.255.255")]
    samples += [
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.0.9",
        "192.0.1.1",
        "192.88.99.1",
        "198.17.255.255",
        "198.20.0.0",
        "198.51.100.7",
        "203.0.113.7",
        "203.0.114.1",
    ]
    for ip in samples:
        assert fraud.countable_ip(ip) is ipaddress.ip_address(ip).is_global, ip


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_counting_any_ipv4_agrees_with_the_stdlib(n: int) -> None:
    ip = str(ipaddress.IPv4Address(n))
    assert fraud.countable_ip(ip) is ipaddress.ip_address(ip).is_global


@given(st.text(alphabet="0123456789.:/ abcdef\u0664", min_size=1, max_size=20))
def test_counting_any_text_agrees_with_the_stdlib(ip: str) -> None:
    """Malformed dotted text (leading zeros, big octets, other digits) is judged as the
    stdlib parses it: not at all when it does not parse."""
    try:
        expected = ipaddress.ip_address(ip.strip())
    except ValueError:
        assert fraud.countable_ip(ip) is False
        return
    if isinstance(expected, ipaddress.IPv6Address) and expected.ipv4_mapped is not None:
        expected = expected.ipv4_mapped
    assert fraud.countable_ip(ip) is expected.is_global
