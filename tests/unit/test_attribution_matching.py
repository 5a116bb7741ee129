"""Attribution matching precedence, fingerprints, outcomes, verification and billing."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.attribution.logic import (
    CLICK_WINDOW,
    FINGERPRINT_WINDOW,
    VIEW_WINDOW,
    ZERO_ADID,
    ClickFacts,
    Decision,
    Fingerprint,
    InstallFacts,
    Windows,
    clean_adid,
    device_signature,
    fingerprint,
    ipv4_octets,
    match,
    normalize_ip,
    normalize_user_agent,
    reject,
)
from services.attribution.outcomes import (
    History,
    InstallRecord,
    Outcome,
    classify,
    is_billable,
    reclassify,
    verification_status,
)

T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ADID = "38400000-8cf0-11bd-b23e-10b96e40000d"
IP = "5.160.12.34"
DALVIK = "Dalvik/2.1.0 (Linux; U; Android 13; SM-A536E Build/TP1A.220624.014)"
CHROME = (
    "Mozilla/5.0 (Linux; Android 13; SM-A536E) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36"
)
SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1"
)


def clk(cid: str, ago: timedelta, tok: str = "tok", **kw: object) -> ClickFacts:
    return ClickFacts(click_id=cid, tracker_token=tok, ts=T - ago, **kw)  # type: ignore[arg-type]


def inst(**kw: object) -> InstallFacts:
    return InstallFacts(ts=T, **kw)  # type: ignore[arg-type]


def android_install(**kw: object) -> InstallFacts:
    base: dict[str, object] = {
        "ip": IP,
        "user_agent": DALVIK,
        "platform": "android",
        "device_model": "SM-A536E",
        "os_version": "13",
    }
    return inst(**(base | kw))


# --- precedence ---------------------------------------------------------------------------


def test_empty_candidates_is_organic() -> None:
    assert match(inst()) == Decision("organic", "organic", "attributed", None, ())
    assert match(android_install(adid=ADID)).method == "organic"


def test_referrer_click_wins_over_newer_adid_and_fingerprint() -> None:
    ref = clk("ref", timedelta(days=3))
    by_adid = clk("a", timedelta(hours=1), adid=ADID)
    by_fp = clk("f", timedelta(minutes=5), ip=IP, user_agent=CHROME)
    d = match(android_install(referrer="click_id=ref", adid=ADID), clicks=[by_fp, by_adid, ref])
    assert (d.method, d.click, d.kind, d.status) == ("click_id", ref, "new_user", "attributed")


def test_adid_wins_over_newer_fingerprint() -> None:
    by_adid = clk("a", timedelta(days=2), adid=ADID.upper())
    by_fp = clk("f", timedelta(minutes=5), ip=IP, user_agent=CHROME)
    d = match(android_install(adid=ADID), clicks=[by_fp, by_adid])
    assert (d.method, d.click) == ("adid", by_adid)


def test_fingerprint_wins_over_impression() -> None:
    by_fp = clk("f", timedelta(hours=5), ip=IP, user_agent=CHROME)
    imp = clk("i", timedelta(minutes=5), adid=ADID)
    d = match(android_install(adid=ADID), clicks=[by_fp], impressions=[imp])
    assert (d.method, d.click) == ("fingerprint", by_fp)


@pytest.mark.parametrize("by", ["adid", "fingerprint"])
def test_view_through_by_adid_or_fingerprint(by: str) -> None:
    imp = (
        clk("i", timedelta(hours=2), adid=ADID)
        if by == "adid"
        else clk("i", timedelta(hours=2), ip=IP, user_agent=CHROME)
    )
    d = match(android_install(adid=ADID), impressions=[imp])
    assert (d.method, d.click) == ("view_through", imp)


def test_impression_is_not_a_click() -> None:
    imp = clk("ref", timedelta(hours=2), adid=ADID)
    d = match(inst(referrer="click_id=ref"), impressions=[imp])
    assert d.method == "organic" and "referrer_click_unknown" in d.reasons


def test_last_click_wins_within_method() -> None:
    old, new = clk("a1", timedelta(days=3), adid=ADID), clk("a2", timedelta(days=1), adid=ADID)
    assert match(inst(adid=ADID), clicks=[new, old]).click == new
    assert match(inst(adid=ADID), clicks=[old, new]).click == new
    fps = [clk(f"f{i}", timedelta(hours=i), ip=IP, user_agent=CHROME) for i in (1, 2, 3)]
    assert match(android_install(), clicks=fps[::-1]).click == fps[0]


def test_equal_times_break_ties_by_id_whatever_the_order() -> None:
    a, b = clk("a", timedelta(hours=1), adid=ADID), clk("b", timedelta(hours=1), adid=ADID)
    assert match(inst(adid=ADID), clicks=[a, b]).click == b
    assert match(inst(adid=ADID), clicks=[b, a]).click == b


def test_bot_touches_never_attribute() -> None:
    bot = clk("ref", timedelta(hours=1), adid=ADID, ip=IP, user_agent=CHROME, is_bot=True)
    d = match(android_install(referrer="click_id=ref", adid=ADID), clicks=[bot], impressions=[bot])
    assert d.method == "organic"


def test_limit_ad_tracking_zeros_never_match() -> None:
    c = clk("z", timedelta(hours=1), adid=ZERO_ADID)
    assert match(inst(adid=ZERO_ADID), clicks=[c]).method == "organic"
    assert clean_adid(ZERO_ADID) is None and clean_adid("  ") is None and clean_adid(None) is None


def test_other_adid_does_not_match() -> None:
    c = clk("a", timedelta(hours=1), adid="other")
    assert match(inst(adid=ADID), clicks=[c]).method == "organic"


# --- referrer problems fall through --------------------------------------------------------


@pytest.mark.parametrize(
    ("referrer", "reason"),
    [
        ("%%%", "referrer_unreadable"),
        ("utm_source=google-play", "referrer_unreadable"),
        ("click_id=" + "x" * 129, "referrer_unreadable"),
        ("click_id=nope", "referrer_click_unknown"),
    ],
)
def test_bad_referrer_falls_through_to_adid(referrer: str, reason: str) -> None:
    c = clk("a", timedelta(hours=1), adid=ADID)
    d = match(inst(referrer=referrer, adid=ADID), clicks=[c])
    assert (d.method, d.click, d.reasons) == ("adid", c, (reason,))


def test_expired_referrer_click_falls_through() -> None:
    ref = clk("ref", CLICK_WINDOW + timedelta(microseconds=1), adid=ADID)
    d = match(inst(referrer="click_id=ref", adid=ADID), clicks=[ref])
    assert (d.method, d.reasons) == ("organic", ("referrer_click_expired",))


def test_referrer_click_after_install() -> None:
    ref = clk("ref", -timedelta(seconds=1))
    d = match(inst(referrer="click_id=ref"), clicks=[ref])
    assert (d.method, d.reasons) == ("organic", ("referrer_click_after_install",))


def test_url_encoded_referrer_matches() -> None:
    ref = clk("c 1", timedelta(hours=1))
    assert match(inst(referrer="click_id%3Dc%252B1"), clicks=[clk("c+1", timedelta(1))]).method == (
        "click_id"
    )
    assert match(inst(referrer="click_id=c%201"), clicks=[ref]).click == ref


# --- window boundaries: 0 <= install - touch <= window, both ends inclusive -----------------


@pytest.mark.parametrize(
    ("method", "window", "make"),
    [
        ("click_id", CLICK_WINDOW, lambda ago: (inst(referrer="click_id=c"), [clk("c", ago)], [])),
        ("adid", CLICK_WINDOW, lambda ago: (inst(adid=ADID), [clk("c", ago, adid=ADID)], [])),
        (
            "fingerprint",
            FINGERPRINT_WINDOW,
            lambda ago: (android_install(), [clk("c", ago, ip=IP, user_agent=CHROME)], []),
        ),
        (
            "view_through",
            VIEW_WINDOW,
            lambda ago: (inst(adid=ADID), [], [clk("c", ago, adid=ADID)]),
        ),
    ],
)
@pytest.mark.parametrize(
    ("ago", "inside"),
    [
        ("window", True),
        ("window+1us", False),
        ("zero", True),
        ("-1us", False),
        ("-1h", False),
    ],
)
def test_window_boundaries(method: str, window: timedelta, make, ago: str, inside: bool) -> None:  # type: ignore[no-untyped-def]
    delta = {
        "window": window,
        "window+1us": window + timedelta(microseconds=1),
        "zero": timedelta(0),
        "-1us": -timedelta(microseconds=1),
        "-1h": -timedelta(hours=1),
    }[ago]
    install, clicks, impressions = make(delta)
    d = match(install, clicks=clicks, impressions=impressions)
    assert d.method == (method if inside else "organic")


def test_default_windows() -> None:
    assert (CLICK_WINDOW, FINGERPRINT_WINDOW, VIEW_WINDOW) == (
        timedelta(days=7),
        timedelta(hours=24),
        timedelta(hours=24),
    )
    assert Windows() == Windows(CLICK_WINDOW, FINGERPRINT_WINDOW, VIEW_WINDOW)


def test_fingerprint_window_is_not_the_click_window() -> None:
    c = clk("f", timedelta(hours=25), ip=IP, user_agent=CHROME)
    assert match(android_install(), clicks=[c]).method == "organic"


def test_per_tracker_windows() -> None:
    short = clk("s", timedelta(days=2), tok="short", adid=ADID)
    long_ = clk("l", timedelta(days=5), tok="long", adid=ADID)
    windows = {"short": Windows(click=timedelta(days=1))}
    assert match(inst(adid=ADID), clicks=[short, long_], windows=windows).click == long_
    d = match(inst(adid=ADID), clicks=[short], default_windows=Windows(click=timedelta(hours=1)))
    assert d.method == "organic"
    wide = {"tok": Windows(fingerprint=timedelta(days=3))}
    c = clk("f", timedelta(days=2), ip=IP, user_agent=CHROME)
    assert match(android_install(), clicks=[c], windows=wide).method == "fingerprint"


def test_clock_skew_tolerance() -> None:
    later = clk("c", -timedelta(seconds=30), adid=ADID)
    assert match(inst(adid=ADID), clicks=[later]).method == "organic"
    d = match(inst(adid=ADID), clicks=[later], max_skew=timedelta(seconds=30))
    assert d.method == "adid"
    assert match(inst(adid=ADID), clicks=[later], max_skew=timedelta(seconds=29)).method == (
        "organic"
    )
    ref = clk("r", -timedelta(seconds=10))
    d = match(inst(referrer="click_id=r"), clicks=[ref], max_skew=timedelta(seconds=10))
    assert d.method == "click_id"


def test_time_zones_do_not_matter() -> None:
    tehran = timezone(timedelta(hours=3, minutes=30))
    c = ClickFacts("c", "tok", (T - CLICK_WINDOW).astimezone(tehran), adid=ADID)
    assert match(inst(adid=ADID), clicks=[c]).method == "adid"


@given(
    st.lists(
        st.tuples(
            st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=10)),
            st.sampled_from(["adid", "fp", "other"]),
        ),
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
def test_match_property(specs: list[tuple[timedelta, str]], rnd) -> None:  # type: ignore[no-untyped-def]
    clicks = []
    for n, (ago, kind) in enumerate(specs):
        extra = {"adid": {"adid": ADID}, "fp": {"ip": IP, "user_agent": CHROME}, "other": {}}[kind]
        clicks.append(clk(f"c{n:02}", ago, **extra))
    d = match(android_install(adid=ADID), clicks=clicks)
    shuffled = list(clicks)
    rnd.shuffle(shuffled)
    assert match(android_install(adid=ADID), clicks=shuffled) == d
    adid_ok = [c for c in clicks if c.adid and timedelta(0) <= T - c.ts <= CLICK_WINDOW]
    fp_ok = [c for c in clicks if c.ip and timedelta(0) <= T - c.ts <= FINGERPRINT_WINDOW]
    if adid_ok:
        assert d.method == "adid"
        assert d.click == max(adid_ok, key=lambda c: (c.ts, c.click_id))
    elif fp_ok:
        assert d.method == "fingerprint"
        assert d.click == max(fp_ok, key=lambda c: (c.ts, c.click_id))
    else:
        assert d == Decision("organic", "organic", "attributed", None)


@given(
    st.text(max_size=200),
    st.one_of(st.none(), st.text(max_size=80)),
    st.one_of(st.none(), st.text(max_size=40)),
    st.one_of(st.none(), st.text(max_size=40)),
)
def test_match_never_raises(
    referrer: str, ua: str | None, ip: str | None, adid: str | None
) -> None:
    install = inst(referrer=referrer, user_agent=ua, ip=ip, adid=adid, os_version=ua)
    c = clk("c", timedelta(hours=1), ip=ip, user_agent=ua, adid=adid)
    d = match(install, clicks=[c], impressions=[c])
    assert d.method in ("click_id", "adid", "fingerprint", "view_through", "organic")


# --- fingerprints and user-agent normalisation ---------------------------------------------


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (DALVIK, ("android", "13", "sm-a536e")),
        (CHROME, ("android", "13", "sm-a536e")),
        (SAFARI, ("ios", "17.4", "iphone")),
        (
            "Mozilla/5.0 (Linux; U; Android 4.0.3; ko-kr; LG-L160L Build/IML74K) AppleWebkit",
            ("android", "4", "lg-l160l"),
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-A536E Build/TP1A.220624.014; wv) AppleWebKit",
            ("android", "13", "sm-a536e"),
        ),
        ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit", ("ios", "16.6", "ipad")),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 Chrome/124", None),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0.0.0", None),
        ("", None),
        (None, None),
        ("Android", None),
        ("Android 13;", None),
    ],
)
def test_device_signature(ua: str | None, expected: tuple[str, str, str] | None) -> None:
    assert device_signature(ua) == expected


def test_normalize_user_agent_strips_versions_builds_and_brackets() -> None:
    a = "Mozilla/5.0 (Linux; Android 13; SM-A536E Build/TP1A.1) Chrome/124.0.6367.82  Mobile"
    b = "Mozilla/5.0 (Linux; Android 13; SM-A536E Build/TP1A.2) Chrome/125.0.1.1 Mobile [FBAN/X]"
    assert normalize_user_agent(a) == normalize_user_agent(b)
    assert normalize_user_agent(a) == "mozilla (linux; android 13; sm-a536e) chrome mobile"
    assert "android 13" in normalize_user_agent(a)  # the OS version is signal, kept
    assert normalize_user_agent(None) == "" and normalize_user_agent("") == ""


def test_huge_user_agent_is_cut_and_fast() -> None:
    huge = CHROME + " " + "x/1.0 [" * 20_000 + "Build/" * 5000
    assert len(huge) > 100_000
    start = time.perf_counter()
    normalised = normalize_user_agent(huge)
    assert device_signature(huge) == ("android", "13", "sm-a536e")
    assert fingerprint(IP, huge) == Fingerprint(IP, ("android", "13", "sm-a536e"))
    assert time.perf_counter() - start < 0.5
    assert len(normalised) <= 2048
    assert normalize_user_agent("a" * 100_000) == "a" * 2048


def test_install_fields_and_click_user_agent_meet() -> None:
    sdk = fingerprint(IP, None, platform="android", device_model="SM-A536E", os_version="13.0")
    assert sdk == fingerprint(IP, CHROME) == fingerprint(IP, DALVIK)
    ios = fingerprint(IP, None, platform="ios", device_model="iPhone14,5", os_version="17.4.1")
    assert ios == fingerprint(IP, SAFARI)
    assert fingerprint(IP, SAFARI) != fingerprint(IP, CHROME)
    assert fingerprint("5.160.12.35", CHROME) != fingerprint(IP, CHROME)


def test_desktop_web_falls_back_to_normalised_user_agent() -> None:
    web = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0.0.0"
    newer = web.replace("124.0.0.0", "125.0.1.2")
    assert fingerprint(IP, web) == fingerprint(IP, newer)
    assert fingerprint(IP, web) is not None and fingerprint(IP, web).device[0] == "ua"  # type: ignore[union-attr]
    c = clk("w", timedelta(hours=1), ip=IP, user_agent=newer)
    assert match(inst(ip=IP, user_agent=web, platform="web"), clicks=[c]).method == "fingerprint"


@pytest.mark.parametrize("ip", [None, "", "not-an-ip", "999.1.1.1", "1.2.3.4/24", "x" * 100])
def test_fingerprint_needs_an_ip(ip: str | None) -> None:
    assert fingerprint(ip, CHROME) is None
    c = clk("f", timedelta(hours=1), ip=ip, user_agent=CHROME)
    assert match(android_install(ip=ip), clicks=[c]).method == "organic"


def test_fingerprint_needs_device_data() -> None:
    assert fingerprint(IP, None) is None and fingerprint(IP, "   ") is None


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("5.160.12.34", "5.160.12.34"),
        (" 5.160.12.34 ", "5.160.12.34"),
        ("::ffff:5.160.12.34", "5.160.12.34"),
        ("2001:DB8:0:1:aaaa::1", "2001:db8:0:1::/64"),
        ("2001:db8:0:1:bbbb::2", "2001:db8:0:1::/64"),
        ("2001:db8:0:2::1", "2001:db8:0:2::/64"),
        ("fe80::1%eth0", None),
        ("fe80::1", None),
        ("169.254.1.1", None),
        ("0.0.0.0", None),
        ("::", None),
        ("224.0.0.1", None),
        ("127.0.0.1", "127.0.0.1"),
        ("10.1.2.3", "10.1.2.3"),
        ("1.2.3", None),
    ],
)
def test_normalize_ip(ip: str, expected: str | None) -> None:
    assert normalize_ip(ip) == expected


def _stdlib_normalize_ip(ip: str) -> str | None:
    """``normalize_ip`` without its dotted-quad fast path: the stdlib's answer."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local or address.is_unspecified or address.is_multicast:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address), 64), strict=False))
    return str(address)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_normalize_ip_agrees_with_the_stdlib_on_any_ipv4(n: int) -> None:
    ip = str(ipaddress.IPv4Address(n))
    assert normalize_ip(ip) == _stdlib_normalize_ip(ip)


@pytest.mark.parametrize(
    "ip",
    [
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3.256",
        "1.2.3.4.5",
        "1..3.4",
        "1.2.3.",
        "1.2.3.-4",
        "1.2.3.+4",
        "1.2.3.4/32",
        "1.2.3.\u0664",  # an Arabic-Indic digit: str.isdigit, not an octet
        "1.2.3.4 ",
        "\t169.254.0.1",
        "239.255.255.255",
        "240.0.0.1",
        "0.0.0.1",
        "0000.1.2.3",
    ],
)
def test_normalize_ip_agrees_with_the_stdlib_on_odd_dotted_text(ip: str) -> None:
    assert normalize_ip(ip) == _stdlib_normalize_ip(ip)


@given(st.text(alphabet="0123456789.:/ abcdef\u0664", max_size=20))
def test_normalize_ip_agrees_with_the_stdlib_on_any_text(ip: str) -> None:
    assume(0 < len(ip) <= 64)
    assert normalize_ip(ip) == _stdlib_normalize_ip(ip)


@given(st.text(alphabet="0123456789.:/ abcdef\u0664", max_size=20))
def test_ipv4_octets_reads_only_what_the_stdlib_reads_as_ipv4(ip: str) -> None:
    octets = ipv4_octets(ip)
    try:
        expected: tuple[int, ...] | None = tuple(ipaddress.IPv4Address(ip).packed)
    except ValueError:
        expected = None
    assert octets == expected


def test_ipv6_same_prefix_matches_and_other_prefix_does_not() -> None:
    c = clk("f", timedelta(hours=1), ip="2001:db8:0:1:aaaa::1", user_agent=CHROME)
    assert match(android_install(ip="2001:db8:0:1:bbbb::9"), clicks=[c]).method == "fingerprint"
    assert match(android_install(ip="2001:db8:0:2::9"), clicks=[c]).method == "organic"


def test_ipv4_mapped_matches_ipv4() -> None:
    c = clk("f", timedelta(hours=1), ip="::ffff:" + IP, user_agent=CHROME)
    assert match(android_install(), clicks=[c]).method == "fingerprint"


# --- reject ---------------------------------------------------------------------------------


def test_reject_keeps_the_click_for_counting_but_not_the_status() -> None:
    c = clk("a", timedelta(hours=1), adid=ADID)
    d = match(inst(adid=ADID), clicks=[c])
    r = reject(d, ["click_injection", "bot", "click_injection"])
    assert (r.status, r.reasons, r.click, r.method) == (
        "rejected",
        ("click_injection", "bot"),
        c,
        "adid",
    )
    assert reject(d, []) is d


# --- outcomes -------------------------------------------------------------------------------

ATTRIBUTED = Decision("adid", "new_user", "attributed", clk("a", timedelta(hours=1)))
ORGANIC = Decision("organic", "organic", "attributed", None)


def test_unknown_device_and_user() -> None:
    assert classify(ATTRIBUTED, History(), install_ts=T) == Outcome("new_user", "tok")
    assert classify(ORGANIC, History(), install_ts=T) == Outcome("organic", None)


@pytest.mark.parametrize("decision", [ATTRIBUTED, ORGANIC])
def test_same_adid_is_reinstall(decision: Decision) -> None:
    out = classify(decision, History(adid_seen=True, user_seen=True), install_ts=T, adid=ADID)
    assert out.kind == "reinstall"
    assert out.tracker_token == (decision.click.tracker_token if decision.click else None)


def test_known_user_on_a_new_adid_is_new_device_under_the_original_tracker() -> None:
    h = History(user_seen=True, user_adids=frozenset({"old"}), original_tracker="orig")
    assert classify(ATTRIBUTED, h, install_ts=T, adid=ADID) == Outcome("new_device", "orig")
    assert classify(ORGANIC, h, install_ts=T, adid=ADID) == Outcome("new_device", "orig")
    assert classify(ORGANIC, h, install_ts=T, adid="OLD") == Outcome("reinstall", None)


def test_known_user_without_adid_is_reinstall_never_new_user() -> None:
    h = History(user_seen=True)
    assert classify(ATTRIBUTED, h, install_ts=T).kind == "reinstall"
    assert classify(ATTRIBUTED, h, install_ts=T, adid=ZERO_ADID).kind == "reinstall"


def test_reattribution_boundary_is_inclusive() -> None:
    def at(inactive: timedelta) -> str:
        h = History(user_seen=True, last_active=T - inactive)
        return classify(ATTRIBUTED, h, install_ts=T).kind

    assert at(timedelta(days=7)) == "reattribution"
    assert at(timedelta(days=7) - timedelta(microseconds=1)) == "reinstall"
    assert at(timedelta(days=30)) == "reattribution"
    h = History(adid_seen=True, last_active=T - timedelta(days=3))
    assert classify(ATTRIBUTED, h, install_ts=T, inactivity=timedelta(days=3)).kind == (
        "reattribution"
    )


def test_reattribution_needs_a_click_newer_than_the_last_activity() -> None:
    old_click = Decision("adid", "new_user", "attributed", clk("a", timedelta(days=9)))
    h = History(user_seen=True, last_active=T - timedelta(days=8))
    assert classify(old_click, h, install_ts=T).kind == "reinstall"
    assert classify(ORGANIC, h, install_ts=T).kind == "reinstall"
    assert classify(ATTRIBUTED, History(user_seen=True), install_ts=T).kind == "reinstall"


@given(
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.one_of(st.none(), st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60))),
)
def test_known_users_are_never_new(
    adid_seen: bool, user_seen: bool, matched: bool, idle: timedelta | None
) -> None:
    h = History(
        adid_seen=adid_seen, user_seen=user_seen, last_active=None if idle is None else T - idle
    )
    out = classify(ATTRIBUTED if matched else ORGANIC, h, install_ts=T, adid=ADID)
    known = adid_seen or user_seen
    assert (out.kind in ("new_user", "organic")) == (not known)
    if out.kind == "reattribution":
        assert matched


# --- reclassification -----------------------------------------------------------------------


def rec(  # type: ignore[no-untyped-def]
    eid: str,
    ago: timedelta,
    kind: str,
    tok: str | None,
    adid: str | None = None,
    click_ago: timedelta | None = None,
):
    """An install ``ago`` before T; with ``tok`` and a kind other than organic, matched
    by a click on ``tok`` (``click_ago`` before T, default a minute before the install)."""
    click = None
    if tok is not None and kind != "organic":
        when = T - (click_ago if click_ago is not None else ago + timedelta(minutes=1))
        click = ClickFacts(f"c-{eid}", tok, when)
    method = "click_id" if click else "organic"
    return InstallRecord(eid, T - ago, kind, tok, adid, method, click)


def test_second_device_of_an_attributed_user_becomes_new_device_under_original_tracker() -> None:
    original = rec("i1", timedelta(days=3), "new_user", "orig", "adid-1")
    for kind, tok in (("new_user", "other"), ("organic", None)):
        second = rec("i2", timedelta(0), kind, tok, "adid-2")
        assert reclassify(second, [original]) == Outcome("new_device", "orig")


def test_same_adid_becomes_reinstall_under_its_own_tracker() -> None:
    original = rec("i1", timedelta(days=3), "new_user", "orig", "adid-1")
    second = rec("i2", timedelta(0), "new_user", "other", "ADID-1")
    assert reclassify(second, [original]) == Outcome("reinstall", "other")


def test_without_an_advertising_id_a_second_install_is_a_reinstall() -> None:
    """As ``classify`` says when the user is known at install time: a second device
    cannot be told from a reinstall without an advertising id — never a new user."""
    original = rec("i1", timedelta(days=3), "new_user", "orig", "adid-1")
    second = rec("i2", timedelta(0), "new_user", "other")
    assert reclassify(second, [original]) == Outcome("reinstall", "other")
    assert reclassify(rec("i3", timedelta(0), "organic", None), [original]) == Outcome(
        "reinstall", None
    )


def test_return_through_a_new_click_after_inactivity_is_a_reattribution() -> None:
    original = rec("i1", timedelta(days=30), "new_user", "orig", "adid-1")
    back = rec("i2", timedelta(0), "new_user", "winback", "adid-1", click_ago=timedelta(hours=1))
    assert reclassify(back, [original]) == Outcome("reattribution", "winback")
    soon = rec("i2", timedelta(days=27), "new_user", "winback", "adid-1")
    assert reclassify(soon, [original]) == Outcome("reinstall", "winback")


def test_login_before_or_after_the_install_gives_the_same_outcome() -> None:
    """``reclassify`` (login processed after the install) agrees with ``classify`` (login
    processed first: the user's history is known when the install is matched)."""
    original = rec("i1", timedelta(days=3), "new_user", "orig", "adid-1")
    for adid in ("adid-2", "adid-1", None):
        second = rec("i2", timedelta(0), "new_user", "other", adid)
        assert second.click is not None
        decision = Decision("click_id", "new_user", "attributed", second.click)
        history = History(
            adid_seen=adid == "adid-1",
            user_seen=True,
            user_adids=frozenset({"adid-1"}),
            last_active=original.install_ts,
            original_tracker="orig",
        )
        assert reclassify(second, [original]) == classify(
            decision, history, install_ts=second.install_ts, adid=adid
        )


def test_reclassify_leaves_alone() -> None:
    original = rec("i1", timedelta(days=3), "new_user", "orig")
    assert reclassify(original, []) == Outcome("new_user", "orig")
    for kind in ("reinstall", "new_device", "reattribution"):
        r = rec("i2", timedelta(0), kind, "x")
        assert reclassify(r, [original]) == Outcome(kind, "x")


def test_reclassify_is_idempotent() -> None:
    original = rec("i1", timedelta(days=3), "new_user", "orig", "adid-1")
    second = rec("i2", timedelta(0), "new_user", "other", "adid-2")
    once = reclassify(second, [original])
    again = rec("i2", timedelta(0), once.kind, once.tracker_token, "adid-2")
    assert reclassify(again, [original]) == once


# --- verification ---------------------------------------------------------------------------

W = timedelta(days=7)


def status(verified_at: datetime | None, now: datetime, **kw: object) -> str:
    return verification_status(
        mode="on_verification",
        install_ts=T,
        verified_at=verified_at,
        now=now,
        **kw,  # type: ignore[arg-type]
    )


def test_on_install_is_always_attributed() -> None:
    assert (
        verification_status(mode="on_install", install_ts=T, verified_at=None, now=T + 10 * W)
        == "attributed"
    )


def test_pending_until_the_deadline_inclusive_then_unverified() -> None:
    assert status(None, T) == "pending"
    assert status(None, T + W) == "pending"
    assert status(None, T + W + timedelta(microseconds=1)) == "unverified"


def test_verified_within_the_window_inclusive() -> None:
    assert status(T + timedelta(hours=1), T + timedelta(hours=1)) == "verified"
    assert status(T + W, T + W) == "verified"
    assert status(T + W + timedelta(microseconds=1), T + 2 * W) == "unverified"
    assert status(T - timedelta(days=30), T) == "verified"  # verified before installing


def test_late_delivery_of_a_timely_verification_still_verifies() -> None:
    assert status(T + timedelta(days=1), T + 3 * W) == "verified"


def test_verified_is_terminal_and_window_configurable() -> None:
    assert status(None, T + 5 * W, current="verified") == "verified"
    assert status(None, T + timedelta(days=2), window=timedelta(days=1)) == "unverified"


@given(
    st.one_of(st.none(), st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=20))),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)),
)
def test_verification_property(verify_after: timedelta | None, elapsed: timedelta) -> None:
    s = status(None if verify_after is None else T + verify_after, T + elapsed)
    if verify_after is not None and verify_after <= W:
        assert s == "verified"
    else:
        assert s == ("unverified" if elapsed > W else "pending")


# --- billing --------------------------------------------------------------------------------


def bill(**kw: object) -> bool:
    base: dict[str, object] = {
        "attribution_id": "a1",
        "kind": "new_user",
        "status": "attributed",
        "tracker_token": "tok",
        "billed": frozenset(),
    }
    return is_billable(**(base | kw))  # type: ignore[arg-type]


def test_billing() -> None:
    assert bill()
    assert bill(status="verified")
    for s in ("pending", "unverified", "rejected"):
        assert not bill(status=s)
    for k in ("reinstall", "new_device", "reattribution", "organic"):
        assert not bill(kind=k)
    assert bill(kind="reattribution", billable_kinds={"new_user", "reattribution"})
    assert not bill(tracker_token=None)


def test_a_user_is_billed_at_most_once() -> None:
    assert not bill(attribution_id="a2", billed={"a1"})
    assert bill(attribution_id="a1", billed={"a1"})  # replay of the billed one
