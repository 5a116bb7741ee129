"""Postback rules: which network URLs an install or an in-app event is posted back to,
with which values, and which install an event is credited to. Pure.

Install postbacks call a tracker's ``postback_urls`` once per attribution and status
(``{event}`` is ``install``). In-app event postbacks — Adjust's event callbacks,
AppsFlyer's in-app event postbacks — call them for the events the tracker chose
(``postback_events``), or an event's own templates (``event_postback_urls``), with
``{event}``, ``{revenue}`` and ``{currency}`` from the event.

An event is credited to the install of its device (or, without one, of its user) that
was current when it happened: the latest install at or before the event's time — an
event older than every install (a device clock running behind) goes to the first one.
Installs rejected as fraud are passed over: they were never counted. The event is then:

- posted back (:data:`SEND`) when that install is attributed or verified to a tracker
  that chose the event's name;
- held (:data:`HOLD`) while the install is not known yet (the matcher has not recorded
  it: an SDK often sends ``$install`` and the first events together) or is pending
  verification — it is posted back when the install is attributed or verified, and
  dropped when that does not happen within :data:`HOLD_FOR`;
- dropped (:data:`DROP`) otherwise: organic, unverified, only rejected installs, or a
  tracker that did not choose it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from urllib.parse import quote, urlsplit

from services.attribution.logic import VERIFICATION_WINDOW

POSTBACK_MACROS = (
    "click_id",
    "tracker",
    "network",
    "campaign",
    "adid",
    "install_ts",
    "event",
    "event_id",
    "event_ts",
    "revenue",
    "currency",
    "user_key",
)
INSTALL_EVENT = "install"
# Install statuses a network hears about; their events are posted back.
POSTBACK_STATUSES = frozenset({"attributed", "verified"})
PENDING, REJECTED = "pending", "rejected"
SEND, HOLD, DROP = "send", "hold", "drop"
# How long an event waits for its install to be attributed: as long as an install may
# wait for its verification.
HOLD_FOR = VERIFICATION_WINDOW


_MACRO = re.compile(
    r"\{(" + "|".join(POSTBACK_MACROS) + r")\}|%7[Bb](" + "|".join(POSTBACK_MACROS) + r")%7[Dd]"
)


def postback_url(template: str, values: Mapping[str, str | None]) -> str:
    """``template`` with each ``{macro}`` replaced by its URL-encoded value (empty when
    unknown or missing; ``/`` is encoded too, so a value never adds a path segment).
    A macro in a URL's path reaches here percent-encoded (``%7Bevent%7D``: URL
    validation encodes braces there) and is replaced all the same. Only the documented
    macros are touched; other braces stay. One pass: a value that spells a macro stays
    as it is."""

    def fill(match: re.Match[str]) -> str:
        return quote(values.get(match.group(1) or match.group(2)) or "", safe="")

    return _MACRO.sub(fill, template)


def money(amount: float | None) -> str | None:
    """An amount as plain decimal text without exponent or trailing zeros:
    ``125000000.0`` → ``125000000``, ``9.99`` → ``9.99``, ``-49.0`` → ``-49``."""
    if amount is None:
        return None
    text = format(Decimal(repr(float(amount))).normalize(), "f")
    return "0" if text in ("-0", "0") else text


def install_values(
    *,
    click_id: str | None,
    tracker: str,
    network: str | None,
    campaign: str | None,
    adid: str | None,
    install_ts: datetime,
    install_event_id: str,
    user_key: str,
) -> dict[str, str | None]:
    """The macro values of an install's postback: ``{event}`` is ``install``, the event
    id and time are the install's, revenue and currency are empty."""
    return {
        "click_id": click_id,
        "tracker": tracker,
        "network": network,
        "campaign": campaign,
        "adid": adid,
        "install_ts": install_ts.isoformat(),
        "event": INSTALL_EVENT,
        "event_id": install_event_id,
        "event_ts": install_ts.isoformat(),
        "revenue": None,
        "currency": None,
        "user_key": user_key,
    }


@dataclass(frozen=True, slots=True)
class InstallRef:
    """One install of the ledger as the event rules see it; ``attributed_at`` orders
    statements about the same install."""

    install_event_id: str
    attribution_id: str
    install_ts: datetime
    attributed_at: datetime
    status: str
    tracker_token: str | None
    click_id: str | None = None
    adid: str | None = None


def merge(installs: Sequence[InstallRef], statement: InstallRef) -> list[InstallRef]:
    """The ledger's installs with a just-published statement folded in. The matcher
    publishes before it commits, so the statement may be newer than the ledger; it
    replaces its install's row unless that row is newer still (a restatement that
    overtook it on another partition). An advertising id only the ledger knows stays."""
    out: list[InstallRef] = []
    found = False
    for row in installs:
        if row.install_event_id != statement.install_event_id:
            out.append(row)
            continue
        found = True
        if statement.attributed_at >= row.attributed_at:
            out.append(replace(statement, adid=statement.adid or row.adid))
        else:
            out.append(row)
    if not found:
        out.append(statement)
    return out


def owning_install(installs: Sequence[InstallRef], at: datetime) -> InstallRef | None:
    """The install an event at ``at`` is credited to: the latest not rejected at or
    before ``at`` (ties by install event id), else the earliest not rejected; None when
    every install was rejected, or there is none."""
    counted = sorted(
        (i for i in installs if i.status != REJECTED),
        key=lambda i: (i.install_ts, i.install_event_id),
    )
    before = [i for i in counted if i.install_ts <= at]
    if before:
        return before[-1]
    return counted[0] if counted else None


@dataclass(frozen=True, slots=True)
class EventVerdict:
    """What to do with one event: :data:`SEND` (to ``install``'s tracker), :data:`HOLD`
    or :data:`DROP`."""

    action: str
    install: InstallRef | None = None


def event_verdict(
    installs: Sequence[InstallRef],
    *,
    name: str,
    at: datetime,
    chosen: Mapping[str, Collection[str]],
) -> EventVerdict:
    """The fate of an event called ``name`` at ``at`` given its device's (or user's)
    installs; ``chosen`` maps the app's tracker tokens to the event names they post
    back. The caller asks only about names some tracker of the app chose: without any
    install yet, the event is held for the install to come."""
    if not installs:
        return EventVerdict(HOLD)
    owner = owning_install(installs, at)
    if owner is None or owner.tracker_token is None:
        return EventVerdict(DROP)
    if name not in chosen.get(owner.tracker_token, ()):
        return EventVerdict(DROP)
    if owner.status == PENDING:
        return EventVerdict(HOLD, owner)
    if owner.status in POSTBACK_STATUSES:
        return EventVerdict(SEND, owner)
    return EventVerdict(DROP)


def event_templates(
    name: str,
    *,
    postback_urls: Sequence[str],
    postback_events: Collection[str],
    event_postback_urls: Mapping[str, Sequence[str]],
) -> list[str]:
    """The URL templates an event called ``name`` is posted back to: its own when the
    tracker gives it some, else the tracker's ``postback_urls``; none when the tracker
    did not choose it."""
    if name not in postback_events:
        return []
    return list(event_postback_urls.get(name) or postback_urls)


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What an event postback says about the event."""

    event_id: str
    name: str
    ts: datetime
    user_key: str
    adid: str | None = None
    revenue: float | None = None
    currency: str | None = None


def event_values(
    event: EventFacts,
    install: InstallRef,
    *,
    tracker: str,
    network: str | None,
    campaign: str | None,
) -> dict[str, str | None]:
    """The macro values of an event's postback: the event's name, id, time, revenue,
    currency and user, and the click, install time and advertising id of the install
    it is credited to (the event's own advertising id when the install had none)."""
    return {
        "click_id": install.click_id,
        "tracker": tracker,
        "network": network,
        "campaign": campaign,
        "adid": install.adid or event.adid,
        "install_ts": install.install_ts.isoformat(),
        "event": event.name,
        "event_id": event.event_id,
        "event_ts": event.ts.isoformat(),
        "revenue": money(event.revenue),
        "currency": event.currency,
        "user_key": event.user_key,
    }


def limit_key(network: str | None, url: str) -> str:
    """The rate-limit bucket of a call: the tracker's network (case and surrounding
    space ignored: every tracker of "Yektanet" shares it), else the URL's host."""
    if network and network.strip():
        return "network:" + network.strip().casefold()
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    return "host:" + host


def call_settled(http_status: int | None, *, invalid_url: bool = False) -> bool:
    """Whether an attempt ends the call: delivered (2xx), or refused for good — a 4xx
    other than 429, or a URL that cannot be sent — which retrying cannot help. A 5xx,
    a 429 and a network error are retried."""
    if invalid_url:
        return True
    if http_status is None:
        return False
    return 200 <= http_status < 300 or (400 <= http_status < 500 and http_status != 429)
