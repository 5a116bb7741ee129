"""Fraud rules for installs. Pure: counts, lists and thresholds are parameters.

:func:`check_install` returns stable reason codes; any reason rejects the install
(``logic.reject``), which is then stored with its reasons, counted per tracker and never
attributed or billed. Counts ("clicks in the last hour", "installs from this IP in the
last hour") are computed by the caller from its indexes and *include* the event being
judged; every threshold is "more than N".
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from libs.runtime.fraudrules import ConversionRule, conversion_rule
from libs.runtime.signing import Verdict
from services.attribution.logic import ipv4_octets

CLICK_INJECTION = "click_injection"
CLICK_SPAMMING = "click_spamming"
DATACENTER_IP = "datacenter_ip"
BOT = "bot"
EMULATOR = "emulator"
ROOTED = "rooted"
BAD_SIGNATURE = "bad_signature"
BLOCKED_IP = "blocked_ip"
DEVICE_FARM = "device_farm"
# The order reasons are reported in; stable so stored reason lists compare equal.
REASONS = (
    BAD_SIGNATURE,
    BLOCKED_IP,
    DATACENTER_IP,
    BOT,
    EMULATOR,
    ROOTED,
    CLICK_INJECTION,
    CLICK_SPAMMING,
    DEVICE_FARM,
)
MAX_USER_AGENT = 2048
# Install user agents come from the SDK's HTTP stack (Dalvik, CFNetwork, okhttp), so
# unlike the tracker's click filter HTTP libraries of apps are *not* bots here; scripted
# clients and headless browsers are.
BOT_PATTERN = re.compile(
    r"[a-z]bot(?:[/\-;]|$)|\bbot\b|bot\.html|crawler|spider|slurp|headless|phantomjs|"
    r"selenium|webdriver|puppeteer|playwright|curl/|wget/|python-requests|python-urllib|"
    r"aiohttp|python-httpx|go-http-client|java/\d|libwww-perl|scrapy|postman",
    re.IGNORECASE,
)


class NetworkSet:
    """IPv4 and IPv6 networks with an O(log n) membership test (merged, sorted ranges).

    ``ip in networks`` accepts text; unparsable text is not a member. IPv4-mapped IPv6
    addresses are looked up as IPv4.
    """

    __slots__ = ("_ranges",)

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()):
        nets = list(networks)
        v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
        v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
        self._ranges: dict[int, tuple[list[int], list[int]]] = {}
        for version, merged in (
            (4, list(ipaddress.collapse_addresses(v4))),
            (6, list(ipaddress.collapse_addresses(v6))),
        ):
            spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in merged)
            self._ranges[version] = ([s for s, _ in spans], [e for _, e in spans])

    def __len__(self) -> int:
        return sum(len(starts) for starts, _ in self._ranges.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetworkSet) and self._ranges == other._ranges

    __hash__ = None  # type: ignore[assignment]  # mutable-looking: equal sets, no hashing

    def __contains__(self, ip: object) -> bool:
        if not (self._ranges[4][0] or self._ranges[6][0]):
            return False  # empty (the usual case): nothing to parse
        address = _address(ip) if isinstance(ip, str) else None
        if address is None:
            return False
        starts, ends = self._ranges[address.version]
        i = bisect.bisect_right(starts, int(address)) - 1
        return i >= 0 and int(address) <= ends[i]


@functools.lru_cache(maxsize=2048)  # memoised: asked several times per install
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not ip or len(ip) > 64:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class ParsedNetworks:
    """A parsed operator list: the networks and the 1-based lines that did not parse."""

    networks: NetworkSet
    bad_lines: tuple[int, ...]


def parse_networks(text: str) -> ParsedNetworks:
    """Parse a CIDR list the operator maintains: one network or bare address per line
    (``10.0.0.0/8``, ``2001:db8::/32``, ``203.0.113.7``); ``#`` starts a comment; blank
    lines are skipped; host bits are tolerated (``10.1.2.3/8`` means ``10.0.0.0/8``). A
    line that does not parse is skipped and reported in ``bad_lines``. Never raises."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    bad: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            nets.append(ipaddress.ip_network(line, strict=False))
        except ValueError:
            bad.append(number)
    return ParsedNetworks(NetworkSet(nets), tuple(bad))


EMPTY = NetworkSet()


@dataclass(frozen=True, slots=True)
class FraudConfig:
    """Per-app thresholds; the defaults follow the issue. Every check can be tuned or off.
    ``conversion`` flags trackers, not installs (``libs.runtime.fraudrules``)."""

    min_click_to_install: timedelta = timedelta(seconds=10)
    max_clicks_per_hour: int = 20
    max_installs_per_ip_hour: int = 10
    conversion: ConversionRule = field(default_factory=ConversionRule)
    reject_datacenter: bool = True
    reject_bots: bool = True
    reject_emulators: bool = True
    reject_rooted: bool = True
    require_signature: bool = False
    blocked_ips: NetworkSet = field(default_factory=NetworkSet)


DEFAULT_CONFIG = FraudConfig()
_NUMBERS = {"max_clicks_per_hour": int, "max_installs_per_ip_hour": int}
_FLAGS = ("reject_datacenter", "reject_bots", "reject_emulators", "reject_rooted")


def config_from(settings: Mapping[str, Any], *, require_signature: bool = False) -> FraudConfig:
    """The :class:`FraudConfig` of an app's stored settings (the ``apps.fraud`` JSON that
    admin validated: ``min_click_to_install_s``, the counts, the conversion rule, the
    ``reject_*`` switches, ``blocked_ips``). Absent or null keys keep the default; unknown
    keys and values of the wrong type are ignored, so a stored document never stops the
    consumer."""
    values: dict[str, Any] = {
        "require_signature": require_signature,
        "conversion": conversion_rule(settings),
    }
    seconds = settings.get("min_click_to_install_s")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
        values["min_click_to_install"] = timedelta(seconds=seconds)
    for name, kind in _NUMBERS.items():
        value = settings.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            values[name] = kind(value)
    for name in _FLAGS:
        if isinstance(settings.get(name), bool):
            values[name] = settings[name]
    blocked = settings.get("blocked_ips")
    if isinstance(blocked, list):
        text = "\n".join(b for b in blocked if isinstance(b, str))
        values["blocked_ips"] = parse_networks(text).networks
    return FraudConfig(**values)


@functools.lru_cache(maxsize=2048)  # memoised: asked several times per install
def countable_ip(ip: str | None) -> bool:
    """Whether per-IP counts (device farms, click spamming by IP) may use ``ip``: only a
    public address names a client. Private, loopback and shared ranges are what a
    deployment behind a proxy sees for everyone (without ``trust_forwarded_for``); counting
    them would reject every install."""
    if not ip or len(ip) > 64:
        return False
    octets = ipv4_octets(ip.strip())
    if octets is not None and octets[0] not in _SPECIAL_FIRST_OCTETS:
        return True  # as below, without the stdlib's parse
    address = _address(ip)
    if address is None:
        return False
    if address.version == 4 and address.packed[0] not in _SPECIAL_FIRST_OCTETS:
        return True  # the stdlib's answer for these, without its walk over ~15 networks
    return address.is_global


# The first octets of every IPv4 block that is not globally reachable (the IANA
# special-purpose registry ``ipaddress.is_global`` follows: 0/8, 10/8, 100.64/10, 127/8,
# 169.254/16, 172.16/12, 192.0.0/24, 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15,
# 198.51.100/24, 203.0.113/24, 224/4, 240/4): any other address is global.
_SPECIAL_FIRST_OCTETS = frozenset({0, 10, 100, 127, 169, 172, 192, 198, 203, *range(224, 256)})


@dataclass(frozen=True, slots=True)
class InstallSignals:
    """What is known about one install for fraud review.

    ``click_ts`` is the matched click's time (None: organic or view-through — no click
    to inject). ``clicks_per_hour`` is the most clicks on the matched tracker from this
    install's device or IP within any hour before it; ``installs_from_ip_last_hour``
    counts installs from the IP in the hour up to and including this one. ``signature``
    is :func:`signing.verify`'s verdict, None when the request carried none.
    """

    install_ts: datetime
    ip: str | None = None
    user_agent: str | None = None
    click_ts: datetime | None = None
    install_begin_ts: datetime | None = None
    clicks_per_hour: int = 0
    installs_from_ip_last_hour: int = 0
    is_emulator: bool = False
    is_rooted: bool = False
    signature: Verdict | None = None


@functools.lru_cache(maxsize=2048)  # memoised: asked several times per install
def is_bot(user_agent: str | None) -> bool:
    """True for scripted clients and crawlers. An absent user agent is *not* a bot here:
    SDKs may omit it. Looks at the first 2,048 characters only."""
    if not user_agent:
        return False
    return bool(BOT_PATTERN.search(user_agent[:MAX_USER_AGENT]))


def is_click_injection(
    *,
    install_ts: datetime,
    click_ts: datetime | None,
    install_begin_ts: datetime | None,
    min_click_to_install: timedelta,
) -> bool:
    """Click-to-install time below ``min_click_to_install`` (exactly the minimum passes;
    negative — the click after the install — is injection), or the store download began
    strictly before the click."""
    if click_ts is None:
        return False
    if install_ts - click_ts < min_click_to_install:
        return True
    return install_begin_ts is not None and install_begin_ts < click_ts


def check_install(
    signals: InstallSignals, config: FraudConfig, *, datacenter: NetworkSet = EMPTY
) -> list[str]:
    """The fraud reasons of one install, in :data:`REASONS` order, each at most once;
    empty when clean. ``datacenter`` is the operator's data-centre / anonymous-proxy list
    (:func:`parse_networks`). An IP that does not parse raises no IP-based reason.
    Deterministic; never raises on odd input (100 KB user agents, IPv6, garbage IPs);
    datetimes must all be timezone-aware."""
    found: set[str] = set()
    if config.require_signature and (signals.signature is None or not signals.signature.ok):
        found.add(BAD_SIGNATURE)
    if signals.ip is not None:
        if signals.ip in config.blocked_ips:
            found.add(BLOCKED_IP)
        if config.reject_datacenter and signals.ip in datacenter:
            found.add(DATACENTER_IP)
    if config.reject_bots and is_bot(signals.user_agent):
        found.add(BOT)
    if config.reject_emulators and signals.is_emulator:
        found.add(EMULATOR)
    if config.reject_rooted and signals.is_rooted:
        found.add(ROOTED)
    if is_click_injection(
        install_ts=signals.install_ts,
        click_ts=signals.click_ts,
        install_begin_ts=signals.install_begin_ts,
        min_click_to_install=config.min_click_to_install,
    ):
        found.add(CLICK_INJECTION)
    if signals.click_ts is not None and signals.clicks_per_hour > config.max_clicks_per_hour:
        found.add(CLICK_SPAMMING)
    if signals.installs_from_ip_last_hour > config.max_installs_per_ip_hour:
        found.add(DEVICE_FARM)
    return [r for r in REASONS if r in found]
