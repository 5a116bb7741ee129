"""Tracker rules: the store redirect carrying the click id, bot detection, client IP."""

from __future__ import annotations

from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from libs.runtime.http import client_ip
from services.tracker.logic import TOKEN, clean, is_bot, redirect_url, referrer_value


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def _referrer(url: str) -> dict[str, list[str]]:
    values = [v for k, v in _query(url) if k == "referrer"]
    assert len(values) == 1, url
    return parse_qs(values[0])


def test_redirect_adds_referrer_to_a_url_without_query() -> None:
    url = redirect_url("https://play.google.com/store/apps/details", "c1", "tok")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "play.google.com",
        "/store/apps/details",
    )
    assert _referrer(url) == {"click_id": ["c1"], "hodhod_tracker": ["tok"]}


def test_redirect_keeps_existing_query_params_in_order() -> None:
    url = redirect_url("https://play.google.com/store/apps/details?id=ir.app&hl=fa", "c1", "t")
    assert _query(url)[:2] == [("id", "ir.app"), ("hl", "fa")]
    assert [k for k, _ in _query(url)] == ["id", "hl", "referrer"]


def test_redirect_keeps_blank_query_values() -> None:
    url = redirect_url("https://s.example/app?empty=&id=x", "c1", "t")
    assert ("empty", "") in _query(url)


def test_redirect_keeps_repeated_query_params() -> None:
    url = redirect_url("https://s.example/app?tag=a&tag=b", "c1", "t")
    assert [v for k, v in _query(url) if k == "tag"] == ["a", "b"]


@pytest.mark.parametrize(
    "existing",
    ["referrer=old", "referrer=old&referrer=older", "referrer=", "referrer=click_id%3Dstale"],
)
def test_redirect_replaces_an_existing_referrer(existing: str) -> None:
    url = redirect_url(f"https://s.example/app?id=x&{existing}&hl=fa", "new", "tok")
    assert [k for k, _ in _query(url)] == ["id", "hl", "referrer"]
    assert _referrer(url)["click_id"] == ["new"]


def test_referrer_param_url_decodes_to_a_query_string_with_the_click_id() -> None:
    url = redirect_url("https://s.example/app?id=x", "c_01HZX", "tok")
    raw = urlsplit(url).query.split("referrer=", 1)[1]
    # Encoded once inside the store URL: no raw '=' or '&' inside the parameter value.
    assert "=" not in raw and "&" not in raw
    assert unquote(raw) == "click_id=c_01HZX&hodhod_tracker=tok"
    assert parse_qs(unquote(raw))["click_id"] == ["c_01HZX"]


def test_referrer_value_is_the_decoded_parameter() -> None:
    url = redirect_url("https://s.example/app", "c1", "tok")
    assert [v for k, v in _query(url) if k == "referrer"] == [referrer_value("c1", "tok")]


@pytest.mark.parametrize("click_id", ["a&b=c", "a+b", "a%20b", "a b", "سلام", "a#b", "a?b"])
def test_click_ids_with_reserved_characters_survive_the_round_trip(click_id: str) -> None:
    url = redirect_url("https://s.example/app?id=x#top", click_id, "tok")
    assert _referrer(url) == {"click_id": [click_id], "hodhod_tracker": ["tok"]}
    assert urlsplit(url).fragment == "top"


def test_redirect_keeps_the_fragment() -> None:
    url = redirect_url("https://s.example/app?id=x#section-2", "c1", "tok")
    assert urlsplit(url).fragment == "section-2"
    assert url.endswith("#section-2")
    assert _referrer(url)["click_id"] == ["c1"]


def test_redirect_keeps_fragment_without_query() -> None:
    url = redirect_url("https://s.example/app#frag", "c1", "tok")
    assert urlsplit(url).fragment == "frag"
    assert _referrer(url)["click_id"] == ["c1"]


def test_redirect_with_persian_query_values() -> None:
    url = redirect_url(
        "https://cafebazaar.ir/app/ir.digikala?l=fa&q=%D8%B3%D9%84%D8%A7%D9%85", "c1", "tok"
    )
    assert ("q", "سلام") in _query(url)
    assert url.isascii()


def test_redirect_with_raw_persian_characters_in_the_store_url() -> None:
    url = redirect_url("https://myket.ir/app/برنامه?name=دیجی‌کالا#بخش", "c1", "tok")
    parts = urlsplit(url)
    assert unquote(parts.path) == "/app/برنامه"
    assert ("name", "دیجی‌کالا") in _query(url)
    assert parts.fragment == "بخش"
    assert _referrer(url)["click_id"] == ["c1"]


def test_redirect_keeps_custom_schemes() -> None:
    url = redirect_url("bazaar://details?id=ir.app", "c1", "tok")
    assert url.startswith("bazaar://details?id=ir.app&referrer=")


@given(
    click_id=st.text(min_size=1, max_size=64),
    token=st.text(min_size=1, max_size=32),
    value=st.text(max_size=20),
)
def test_redirect_round_trip_property(click_id: str, token: str, value: str) -> None:
    url = redirect_url(f"https://s.example/app?keep={value}", click_id, token)
    assert _referrer(url) == {"click_id": [click_id], "hodhod_tracker": [token]}
    assert [k for k, _ in _query(url)][-1] == "referrer"


@pytest.mark.parametrize("agent", [None, ""])
def test_missing_user_agent_is_a_bot(agent: str | None) -> None:
    assert is_bot(agent) is True


@pytest.mark.parametrize(
    "agent",
    [
        "Googlebot/2.1 (+http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0)",
        "Mozilla/5.0 (compatible; YandexBot/3.0)",
        "facebookexternalhit/1.1",
        "TelegramBot (like TwitterBot)",
        "WhatsApp/2.23.20.0 A",
        "curl/8.4.0",
        "Wget/1.21",
        "python-requests/2.31",
        "Apache-HttpClient/4.5",
        "Mozilla/5.0 HeadlessChrome/120.0",
        "Slurp",
        "Some Spider",
        "AhrefsCrawler",
        "Link Preview Generator",
        "GOOGLEBOT",
    ],
)
def test_known_bots(agent: str) -> None:
    assert is_bot(agent) is True


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (Linux; Android 13; SM-A536E) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0 Mobile Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Dalvik/2.1.0 (Linux; U; Android 13; SM-A536E)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    ],
)
def test_real_browsers_are_not_bots(agent: str) -> None:
    assert is_bot(agent) is False


def test_cubot_phone_is_not_a_bot() -> None:
    agent = (
        "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/74.0.3729.136 Mobile Safari/537.36"
    )
    assert is_bot(agent) is False


def _request(forwarded: str | None, peer: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    scope = {"type": "http", "headers": headers, "client": (peer, 1234) if peer else None}
    return Request(scope)


def test_client_ip_takes_what_the_trusted_proxy_saw() -> None:
    """Each proxy appends the address it saw; entries to their left are the client's
    own claims, so one trusted proxy means the right-most entry."""
    req = _request("6.6.6.6, 5.160.12.34", "10.0.0.9")
    assert client_ip(req, trust_forwarded_for=True) == "5.160.12.34"
    assert client_ip(_request("  5.160.12.34  ", "p"), trust_forwarded_for=True) == "5.160.12.34"
    assert client_ip(_request("2001:db8::1", "p"), trust_forwarded_for=True) == "2001:db8::1"


def test_client_ip_behind_several_proxies() -> None:
    # a CDN saw the client, the load balancer saw the CDN
    req = _request("6.6.6.6, 5.160.12.34, 104.16.0.1", "10.0.0.9")
    assert client_ip(req, trust_forwarded_for=True, hops=2) == "5.160.12.34"
    assert client_ip(req, trust_forwarded_for=True, hops=3) == "6.6.6.6"
    # fewer entries than proxies: misconfigured or bypassed — the peer
    assert client_ip(req, trust_forwarded_for=True, hops=4) == "10.0.0.9"


def test_client_ip_ignores_forwarded_for_unless_trusted() -> None:
    """Anyone can send X-Forwarded-For; only a deployment behind a proxy may believe it."""
    req = _request("5.160.12.34", "10.0.0.9")
    assert client_ip(req, trust_forwarded_for=False) == "10.0.0.9"


@pytest.mark.parametrize("forwarded", [None, "", " ", "10.0.0.1, ", "x" * 65, "1.2.3.4\x00"])
def test_client_ip_falls_back_to_peer(forwarded: str | None) -> None:
    assert client_ip(_request(forwarded, "10.0.0.9"), trust_forwarded_for=True) == "10.0.0.9"


def test_client_ip_without_anything_is_none() -> None:
    assert client_ip(_request(None, None), trust_forwarded_for=True) is None


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        (None, 10, None),
        ("", 10, None),
        ("abc", 10, "abc"),
        ("a\x00b\x01c\x7f\x9fd", 10, "abcd"),
        ("\x00\x00", 10, None),
        ("گوشی", 10, "گوشی"),
        ("x" * 20, 5, "xxxxx"),
    ],
)
def test_clean_removes_control_characters_and_truncates(
    raw: str | None, limit: int, expected: str | None
) -> None:
    assert clean(raw, limit) == expected


@pytest.mark.parametrize("token", ["abc", "A-b_9", "x" * 32])
def test_token_shape_accepted(token: str) -> None:
    assert TOKEN.fullmatch(token)


@pytest.mark.parametrize("token", ["", "x" * 33, "a\x00", "a/b", "a b", "توکن"])
def test_token_shape_rejected(token: str) -> None:
    assert not TOKEN.fullmatch(token)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://example.com/x", True),
        ("http://shop.example.com/", True),
        ("https://EXAMPLE.com./x", True),
        ("https://example.com.evil.net/", False),
        ("https://notexample.com/", False),
        ("javascript://example.com/%0aalert(1)", False),
        ("//example.com/x", False),
        ("ftp://example.com/x", False),
        ("", False),
        (None, False),
        ("https://example.com/" + "x" * 3000, False),
    ],
)
def test_allowed_redirect(url: str | None, allowed: bool) -> None:
    from services.tracker.logic import allowed_redirect

    result = allowed_redirect(url, ["example.com"])
    assert result == (url if allowed else None)
    assert allowed_redirect(url, []) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com\\@example.com/x",
        "https://user@example.com/x",
        "https://evil.com@example.com/x",
        "http://[x",
    ],
)
def test_allowed_redirect_refuses_tricks(url: str) -> None:
    from services.tracker.logic import allowed_redirect

    assert allowed_redirect(url, ["example.com"]) is None
