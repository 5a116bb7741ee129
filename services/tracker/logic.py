"""Tracker rules: the redirect a click answers with, and bot detection. Pure."""

from __future__ import annotations

import functools
import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

MAX_USER_AGENT = 2048
# Crawlers name themselves "<name>bot/<version>", "<name>bot-<suffix>" or carry an info
# URL; a bare "bot" inside a word is not enough (CUBOT makes phones).
BOT_PATTERN = re.compile(
    r"[a-z]bot(?:[/\-;]|$)|\bbot\b|bot\.html|\+https?://|crawler|spider|slurp|"
    r"facebookexternalhit|telegrambot|twitterbot|whatsapp|preview|headless|"
    r"curl/|wget/|python-requests|python-httpx|go-http-client|httpclient|okhttp/\d+\.\d+$",
    re.IGNORECASE,
)


def referrer_value(click_id: str, tracker_token: str) -> str:
    """The install-referrer string the store hands back to the app, unchanged, at install."""
    return urlencode({"click_id": click_id, "hodhod_tracker": tracker_token})


def redirect_url(store_url: str, click_id: str, tracker_token: str) -> str:
    """``store_url`` with a ``referrer`` query parameter carrying the click id.

    This is Google Play's install-referrer shape: the parameter's URL-decoded value is
    itself a query string. Existing query parameters of the store URL are kept (a
    ``referrer`` of its own is replaced).
    """
    scheme, netloc, path, query, fragment = _store_parts(store_url)
    referrer = "referrer=" + quote(referrer_value(click_id, tracker_token), safe="")
    query = f"{query}&{referrer}" if query else referrer
    return urlunsplit((scheme, netloc, path, query, fragment))


@functools.lru_cache(maxsize=1024)
def _store_parts(store_url: str) -> tuple[str, str, str, str, str]:
    """A store URL split, its query re-encoded without ``referrer`` — the same for every
    click of a tracker, so parsed once (bounded cache)."""
    parts = urlsplit(store_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "referrer"]
    return parts.scheme, parts.netloc, parts.path, urlencode(query, quote_via=quote), parts.fragment


def allowed_redirect(url: str | None, domains: list[str]) -> str | None:
    """``url`` when it is http(s) to one of ``domains`` (or a subdomain), else None:
    a tracker link must never become an open redirect."""
    if not url or len(url) > 2048 or "\\" in url:
        return None  # browsers read "\" as "/": https://evil\@good/ goes to evil
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if parts.scheme not in ("http", "https") or not host or "@" in parts.netloc:
        return None
    for domain in domains:
        domain = domain.lower().rstrip(".")
        if host == domain or host.endswith("." + domain):
            return url
    return None


def is_bot(user_agent: str | None) -> bool:
    """True for empty user agents and known crawlers/link previewers/HTTP libraries."""
    if not user_agent:
        return True
    return _bot(user_agent)


# User agents repeat across clicks (one per browser build), and the pattern is long.
@functools.lru_cache(maxsize=4096)
def _bot(user_agent: str) -> bool:
    return bool(BOT_PATTERN.search(user_agent))


TOKEN = re.compile(r"[A-Za-z0-9_-]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(value: str | None, limit: int) -> str | None:
    """A request-derived string made safe to record: control characters (NUL above all,
    which Postgres refuses) removed, cut to ``limit``; None when nothing is left."""
    if not value:
        return None
    return _CONTROL.sub("", value)[:limit] or None
