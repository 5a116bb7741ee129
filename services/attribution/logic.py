"""Attribution rules: who brought the user, what the install means, when it is billable. Pure.

Everything here takes time, windows and candidate data as parameters and returns values;
the consumer reads state, calls these functions and writes what they return.

Window boundaries, one rule for every window: a touch (click or impression) at ``ts``
counts for an install at ``install_ts`` when ``0 <= install_ts - ts <= window`` — both
ends inclusive, so a click exactly 7 days before the install still attributes and a click
at the install instant too; one microsecond more on either side does not.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import parse_qs, unquote

# Memoised parsers (``functools.lru_cache``, bounded): the matcher asks the same question
# of one install or click several times (its batch's reads, matching, fraud review).
_PARSED = 2048

CLICK_WINDOW = timedelta(days=7)
FINGERPRINT_WINDOW = timedelta(hours=24)
VIEW_WINDOW = timedelta(hours=24)
INACTIVITY = timedelta(days=7)
VERIFICATION_WINDOW = timedelta(days=7)
MAX_REFERRER = 4096
MAX_USER_AGENT = 2048
ATTRIBUTION_NS = uuid.UUID("6f1c1c49-0d0a-4d3e-9a59-8f3f1f5b7d01")
# iOS and Android hand out this advertising id when the user limits ad tracking: it is
# shared by millions of devices and must never match.
ZERO_ADID = "00000000-0000-0000-0000-000000000000"


@functools.lru_cache(maxsize=_PARSED)
def referrer_click_id(referrer: str | None) -> str | None:
    """The ``click_id`` inside a store referrer string, or None.

    Accepts the raw query string Google Play hands back (``click_id=…&…``) and a
    still-URL-encoded copy of it (``click_id%3D…``), as some SDKs send. Malformed input
    yields None, never an exception.
    """
    if not referrer or len(referrer) > MAX_REFERRER:
        return None
    if "%" not in referrer and "+" not in referrer:
        # Nothing to unquote (both candidates below are the referrer): parse_qs's answer,
        # without its machinery — the first non-empty ``click_id`` value.
        for field in referrer.split("&"):
            name, equals, value = field.partition("=")
            if name == "click_id" and equals and value:
                click_id = value.strip()
                return click_id if 0 < len(click_id) <= 128 and click_id.isprintable() else None
        return None
    for candidate in (referrer, unquote(referrer)):
        values = parse_qs(candidate, keep_blank_values=False).get("click_id")
        if values:
            click_id = values[0].strip()
            if 0 < len(click_id) <= 128 and click_id.isprintable():
                return click_id
    return None


@dataclass(frozen=True, slots=True)
class ClickFacts:
    """A click — or, passed as an impression, an ad view (``click_id`` is then its id).

    The device fields are what the tracker saw; all optional. ``is_bot`` touches never
    attribute.
    """

    click_id: str
    tracker_token: str
    ts: datetime
    adid: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    is_bot: bool = False


@dataclass(frozen=True, slots=True)
class TrackerFacts:
    token: str
    channel: str
    network: str | None
    campaign: str | None
    adgroup: str | None
    creative: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """Who brought the install. ``method``: click_id | adid | fingerprint | view_through |
    organic. ``kind`` from matching alone is provisional (new_user for a match, organic
    otherwise); :func:`classify` gives the final one. ``status``: attributed | rejected.
    ``reasons`` explain skipped evidence (e.g. ``referrer_click_expired``) or, for a
    rejected install, its fraud codes."""

    method: str
    kind: str
    status: str
    click: ClickFacts | None
    reasons: tuple[str, ...] = ()


def decide(
    *, install_ts: datetime, click: ClickFacts | None, window: timedelta = CLICK_WINDOW
) -> Decision:
    """Attribute to ``click`` when it precedes the install within ``window``; else organic."""
    if click is not None and timedelta(0) <= install_ts - click.ts <= window:
        return Decision("click_id", "new_user", "attributed", click)
    return Decision("organic", "organic", "attributed", None)


def attribution_id(app_id: str, install_event_id: str, click_id: str | None) -> str:
    """Deterministic: the same install and click always give the same id (idempotency):
    ``uuid5(ATTRIBUTION_NS, json.dumps([app_id, install_event_id, click_id])).hex``."""
    if _plain(app_id) and _plain(install_event_id) and (click_id is None or _plain(click_id)):
        # json.dumps's text for ids it writes as they are, without its encoder.
        click = "null" if click_id is None else f'"{click_id}"'
        name = f'["{app_id}", "{install_event_id}", {click}]'
    else:
        name = json.dumps([app_id, install_event_id, click_id])
    digest = bytearray(hashlib.sha1(_ATTRIBUTION_NS_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5, as uuid.uuid5 sets it
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return digest.hex()


_ATTRIBUTION_NS_BYTES = ATTRIBUTION_NS.bytes


def _plain(text: str) -> bool:
    """Whether ``json.dumps`` (ASCII-only) writes ``text`` unescaped: printable ASCII
    without quotes or backslashes."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


# --- fingerprints ------------------------------------------------------------------------

_BUILD = re.compile(r"\s*\bbuild/[^;)\s]*", re.IGNORECASE)
_PRODUCT_VERSION = re.compile(r"([a-z][a-z0-9_.-]*)/[0-9][0-9a-z._+-]*")
_BRACKETS = re.compile(r"\[[^\]]{0,512}\]")
_SPACES = re.compile(r"\s+")
_ANDROID = re.compile(r"android[ /]([0-9][0-9._]{0,15})\s*;([^)]{0,256})", re.IGNORECASE)
_IOS = re.compile(r"\b(iphone|ipad|ipod)\b[^)]{0,64}?\bos ([0-9][0-9_.]{0,15})", re.IGNORECASE)
_APPLE_MODEL = re.compile(r"(iphone|ipad|ipod)", re.IGNORECASE)
_LOCALE = re.compile(r"[a-z]{2,3}(?:[-_][a-z]{2,4})?")
_NOT_MODEL = {"", "u", "i", "n", "wv", "mobile", "tablet", "k", "linux"}


def normalize_user_agent(user_agent: str | None) -> str:
    """A user agent with the noise that changes between a click and an install removed.

    The rule, in order: cut to the first 2,048 characters (so a 100 KB header costs what a
    normal one does); lower-case; drop ``[...]`` in-app browser blocks (``[FBAN/…]``) and
    Android ``Build/<id>`` tokens; turn every ``product/version`` into ``product`` (browser
    and WebKit versions move with auto-updates); collapse white space. OS versions written
    with a space (``Android 13``, ``OS 17_4``) are signal and stay. Never raises.
    """
    if not user_agent:
        return ""
    ua = user_agent[:MAX_USER_AGENT].lower()
    ua = _BRACKETS.sub(" ", ua)
    ua = _BUILD.sub("", ua)
    ua = _PRODUCT_VERSION.sub(r"\1", ua)
    return _SPACES.sub(" ", ua).strip()


@functools.lru_cache(maxsize=_PARSED)  # few distinct versions: asked per install and click
def _major_minor(version: str | None) -> str | None:
    """``17_4_1`` → ``17.4``, ``13.0`` → ``13``, ``8.1.0`` → ``8.1``; None for no digits."""
    if not version:
        return None
    parts = [p for p in re.split(r"[._]", version.strip()[:32]) if p]
    if not parts or not all(p.isdigit() for p in parts[:2]):
        return None
    major, minor = str(int(parts[0])), (str(int(parts[1])) if len(parts) > 1 else "0")
    return major if minor == "0" else f"{major}.{minor}"


@functools.lru_cache(maxsize=_PARSED)  # few distinct models: asked per install and click
def _model(model: str | None) -> str | None:
    """Lower-cased model without build id; Apple identifiers reduce to the family
    (``iPhone14,5`` → ``iphone``) because Safari's user agent names only the family.
    Chrome's frozen ``K`` and other placeholders are unknown (None)."""
    if not model:
        return None
    m = _BUILD.sub("", model[:128]).strip().lower()
    apple = _APPLE_MODEL.match(m)
    if apple:
        return apple.group(1)
    if m in _NOT_MODEL or _LOCALE.fullmatch(m):
        return None
    return _SPACES.sub(" ", m)


@functools.lru_cache(maxsize=_PARSED)  # few distinct agents: asked per install and click
def device_signature(user_agent: str | None) -> tuple[str, str, str] | None:
    """``(os, os major.minor, model)`` read from a mobile user agent, or None when the
    agent does not name all three (desktop browsers, Chrome's reduced ``Android 10; K``)."""
    if not user_agent:
        return None
    ua = user_agent[:MAX_USER_AGENT]
    android = _ANDROID.search(ua)
    if android:
        version = _major_minor(android.group(1))
        for token in android.group(2).split(";"):
            model = _model(token)
            if model and version:
                return ("android", version, model)
        return None
    ios = _IOS.search(ua)
    if ios:
        version = _major_minor(ios.group(2))
        return ("ios", version, ios.group(1).lower()) if version else None
    return None


def hardware(platform: str | None, device_model: str | None, user_agent: str | None) -> str | None:
    """The kind of physical device an install ran on, ``os|model`` (``android|sm-a546e``):
    the SDK's platform and model, else what the user agent names; None when neither names
    a model. Reinstalling on the same phone gives the same answer (the OS version, which
    updates move, is left out), so two installs of one user with different answers are
    two devices. Apple devices are known by family only (``ios|iphone``: Safari names no
    more), so two iPhones are not told apart. Never raises."""
    os_name = (platform or "").strip().lower()
    model = _model(device_model)
    if os_name in ("android", "ios") and model:
        return f"{os_name}|{model}"
    signature = device_signature(user_agent)
    return f"{signature[0]}|{signature[2]}" if signature else None


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def ipv4_octets(ip: str) -> tuple[int, int, int, int] | None:
    """The octets of ``ip`` when it is a dotted-quad IPv4 address exactly as
    ``ipaddress.IPv4Address`` reads one (four parts of 1–3 ASCII digits, no leading zero,
    each at most 255); None for anything else — IPv6 or text the stdlib is left to judge.
    One regular expression instead of the stdlib's parse: the matcher asks about every
    install's and matched click's address, nearly all IPv4."""
    found = _IPV4.fullmatch(ip)
    if found is None:
        return None
    a, b, c, d = found.groups()
    return int(a), int(b), int(c), int(d)


@functools.lru_cache(maxsize=_PARSED)
def normalize_ip(ip: str | None) -> str | None:
    """Canonical text of an IP, or None when it does not parse. IPv4-mapped IPv6 becomes
    IPv4; other IPv6 addresses reduce to their /64, the prefix a carrier assigns to one
    subscriber, because the interface half rotates (privacy extensions). Link-local,
    unspecified and multicast addresses identify no one and give None; private and
    loopback ones are kept (a local run fingerprints over 127.0.0.1)."""
    if not ip or len(ip) > 64:
        return None
    text = ip.strip()
    octets = ipv4_octets(text)
    if octets is not None:  # what the stdlib says of these, without parsing twice
        a, b, c, d = octets
        if (a == 169 and b == 254) or 224 <= a <= 239 or a == b == c == d == 0:
            return None  # link-local, multicast, unspecified
        return text  # canonical already: no leading zeros, four parts
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local or address.is_unspecified or address.is_multicast:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address), 64), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """IP plus device: ``("android", "13", "sm-a536e")`` when known, else
    ``("ua", <normalised user agent>)``. Two fingerprints match when equal."""

    ip: str
    device: tuple[str, ...]


@functools.lru_cache(maxsize=_PARSED)
def fingerprint(
    ip: str | None,
    user_agent: str | None,
    *,
    platform: str | None = None,
    device_model: str | None = None,
    os_version: str | None = None,
) -> Fingerprint | None:
    """The fingerprint of a click or install; None without a usable IP or any device data.

    The SDK's explicit ``platform``/``os_version``/``device_model`` win over what the user
    agent says; a click only has its user agent.
    """
    address = normalize_ip(ip)
    if address is None:
        return None
    os_name = (platform or "").strip().lower()
    version, model = _major_minor(os_version), _model(device_model)
    if os_name in ("android", "ios") and version and model:
        return Fingerprint(address, (os_name, version, model))
    signature = device_signature(user_agent)
    if signature is not None:
        return Fingerprint(address, signature)
    ua = normalize_user_agent(user_agent)
    return Fingerprint(address, ("ua", ua)) if ua else None


# --- matching ----------------------------------------------------------------------------


def fingerprint_key(fp: Fingerprint | None) -> str | None:
    """The stored, indexable form of a fingerprint (equal fingerprints, equal keys)."""
    if fp is None:
        return None
    return "|".join((fp.ip, *fp.device))[:600]


@dataclass(frozen=True, slots=True)
class InstallFacts:
    """What the install report says about the device (all optional but the time).
    ``signature`` is ingest's verdict code on the SDK request (None: not checked)."""

    ts: datetime
    referrer: str | None = None
    adid: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    platform: str | None = None
    device_model: str | None = None
    os_version: str | None = None
    # For fraud review (fraud.InstallSignals), not for matching:
    install_begin_ts: datetime | None = None
    is_emulator: bool = False
    is_rooted: bool = False
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class Windows:
    """A tracker's windows; ``Windows()`` is the issue's defaults."""

    click: timedelta = CLICK_WINDOW
    fingerprint: timedelta = FINGERPRINT_WINDOW
    view: timedelta = VIEW_WINDOW


DEFAULT_WINDOWS = Windows()


def clean_adid(adid: str | None) -> str | None:
    """Lower-cased advertising id; None for absent, blank or the limit-ad-tracking zeros."""
    if not adid:
        return None
    value = adid.strip().lower()
    return value if value and value != ZERO_ADID else None


def _within(install_ts: datetime, ts: datetime, window: timedelta, skew: timedelta) -> bool:
    return -skew <= install_ts - ts <= window


def _last(touches: Iterable[ClickFacts]) -> ClickFacts | None:
    """Last click wins; equal times are broken by the larger id, so the result does not
    depend on the order the candidates arrive in."""
    return max(touches, key=lambda t: (t.ts, t.click_id), default=None)


def match(
    install: InstallFacts,
    *,
    clicks: Sequence[ClickFacts] = (),
    impressions: Sequence[ClickFacts] = (),
    windows: Mapping[str, Windows] | None = None,
    default_windows: Windows = DEFAULT_WINDOWS,
    max_skew: timedelta = timedelta(0),
) -> Decision:
    """Pick the touch that brought ``install``, by precedence: (1) the click named in the
    install referrer, within its click-through window; (2) a click with the same
    advertising id, click-through window; (3) a click with the same fingerprint,
    fingerprint window; (4) an impression with the same advertising id or fingerprint,
    view-through window; else organic. Last touch wins within a method.

    ``windows`` maps tracker tokens to their windows (others get ``default_windows``).
    ``max_skew`` lets a touch up to that much *after* the install count (device clocks
    lag); the default trusts the times as given. Bot touches never count. Idempotent:
    the same inputs, in any order, give the same decision.
    """
    windows = windows or {}

    def win(touch: ClickFacts) -> Windows:
        return windows.get(touch.tracker_token, default_windows)

    reasons: list[str] = []
    live = [c for c in clicks if not c.is_bot]
    ref = referrer_click_id(install.referrer)
    if install.referrer and ref is None:
        reasons.append("referrer_unreadable")
    if ref is not None:
        named = _last(c for c in live if c.click_id == ref)
        if named is None:
            reasons.append("referrer_click_unknown")
        elif _within(install.ts, named.ts, win(named).click, max_skew):
            return Decision("click_id", "new_user", "attributed", named, tuple(reasons))
        else:
            after = install.ts - named.ts < -max_skew
            reasons.append("referrer_click_after_install" if after else "referrer_click_expired")

    adid = clean_adid(install.adid)
    if adid is not None:
        hit = _last(
            c
            for c in live
            if clean_adid(c.adid) == adid and _within(install.ts, c.ts, win(c).click, max_skew)
        )
        if hit is not None:
            return Decision("adid", "new_user", "attributed", hit, tuple(reasons))

    mine = fingerprint(
        install.ip,
        install.user_agent,
        platform=install.platform,
        device_model=install.device_model,
        os_version=install.os_version,
    )
    if mine is not None:
        hit = _last(
            c
            for c in live
            if _within(install.ts, c.ts, win(c).fingerprint, max_skew)
            and fingerprint(c.ip, c.user_agent) == mine
        )
        if hit is not None:
            return Decision("fingerprint", "new_user", "attributed", hit, tuple(reasons))

    if adid is not None or mine is not None:
        hit = _last(
            i
            for i in impressions
            if not i.is_bot
            and _within(install.ts, i.ts, win(i).view, max_skew)
            and (
                (adid is not None and clean_adid(i.adid) == adid)
                or (mine is not None and fingerprint(i.ip, i.user_agent) == mine)
            )
        )
        if hit is not None:
            return Decision("view_through", "new_user", "attributed", hit, tuple(reasons))
    return Decision("organic", "organic", "attributed", None, tuple(reasons))


def reject(decision: Decision, fraud_reasons: Sequence[str]) -> Decision:
    """The decision with fraud applied: any reason makes it ``rejected`` — never
    attributed nor billed. The click stays only so the rejection is counted against its
    tracker. No reasons: ``decision`` unchanged."""
    if not fraud_reasons:
        return decision
    return replace(decision, status="rejected", reasons=tuple(dict.fromkeys(fraud_reasons)))
