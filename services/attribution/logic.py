"""Attribution rules: read the install referrer and decide who brought the user. Pure.

Foundation scope: matching by the click id carried in the install referrer, else
organic. The attribution issue adds advertising id, fingerprint and view-through
matching, reinstall/new-device outcomes, fraud and verification.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs, unquote

CLICK_WINDOW = timedelta(days=7)
MAX_REFERRER = 4096
ATTRIBUTION_NS = uuid.UUID("6f1c1c49-0d0a-4d3e-9a59-8f3f1f5b7d01")


def referrer_click_id(referrer: str | None) -> str | None:
    """The ``click_id`` inside a store referrer string, or None.

    Accepts the raw query string Google Play hands back (``click_id=…&…``) and a
    still-URL-encoded copy of it (``click_id%3D…``), as some SDKs send. Malformed input
    yields None, never an exception.
    """
    if not referrer or len(referrer) > MAX_REFERRER:
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
    click_id: str
    tracker_token: str
    ts: datetime


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
    method: str  # click_id | organic
    kind: str  # new_user | organic
    status: str  # attributed
    click: ClickFacts | None


def decide(
    *, install_ts: datetime, click: ClickFacts | None, window: timedelta = CLICK_WINDOW
) -> Decision:
    """Attribute to ``click`` when it precedes the install within ``window``; else organic."""
    if click is not None and timedelta(0) <= install_ts - click.ts <= window:
        return Decision("click_id", "new_user", "attributed", click)
    return Decision("organic", "organic", "attributed", None)


def attribution_id(app_id: str, install_event_id: str, click_id: str | None) -> str:
    """Deterministic: the same install and click always give the same id (idempotency)."""
    return uuid.uuid5(ATTRIBUTION_NS, json.dumps([app_id, install_event_id, click_id])).hex
