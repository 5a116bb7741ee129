"""A profile's device tokens and contacts as provider Addresses. Pure.

Profiles keep push tokens as ``{"device_id", "token", "provider": "fcm"|"apns",
"valid", "updated_at"}`` and web push subscriptions as ``{"device_id", "token",
"valid", …}`` whose token is the browser's ``PushSubscription`` JSON (endpoint and
keys). Invalid entries give no Address.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from services.dispatcher import sms
from services.dispatcher.providers.base import Address

PUSH_KINDS = frozenset({"fcm", "apns"})


def push_address(entry: Mapping[str, Any]) -> Address | None:
    """The Address of one ``push_tokens`` entry, or None (invalid, unknown provider)."""
    token, provider = entry.get("token"), entry.get("provider")
    if entry.get("valid") is False or not isinstance(token, str) or not token:
        return None
    if provider not in PUSH_KINDS:
        return None
    device = entry.get("device_id")
    return Address(
        kind=provider, value=token, device_id=device if isinstance(device, str) else None
    )


def webpush_address(entry: Mapping[str, Any]) -> Address | None:
    """The Address of one ``web_push`` entry: its token parsed as a subscription with
    an https endpoint and both keys, else None."""
    token = entry.get("token")
    if entry.get("valid") is False or not isinstance(token, str):
        return None
    try:
        subscription = json.loads(token)
    except json.JSONDecodeError:
        return None
    if not isinstance(subscription, dict):
        return None
    endpoint, keys = subscription.get("endpoint"), subscription.get("keys")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        return None
    if not isinstance(keys, dict) or not all(
        isinstance(keys.get(k), str) for k in ("p256dh", "auth")
    ):
        return None
    device = entry.get("device_id")
    return Address(
        kind="webpush",
        value=endpoint,
        device_id=device if isinstance(device, str) else None,
        keys={"p256dh": keys["p256dh"], "auth": keys["auth"]},
    )


def push_addresses(entries: Iterable[Mapping[str, Any]]) -> list[Address]:
    """Every usable push token, newest first (by ``updated_at``)."""
    ordered = sorted(entries, key=lambda e: str(e.get("updated_at") or ""), reverse=True)
    return [a for a in (push_address(e) for e in ordered) if a is not None]


def webpush_addresses(entries: Iterable[Mapping[str, Any]]) -> list[Address]:
    ordered = sorted(entries, key=lambda e: str(e.get("updated_at") or ""), reverse=True)
    return [a for a in (webpush_address(e) for e in ordered) if a is not None]


def sms_address(phone: str | None, default_region: str = "IR") -> Address | None:
    """The profile's phone in E.164, or None when there is none or it is not valid."""
    if not phone:
        return None
    number = sms.normalise_phone(phone, default_region)
    return Address(kind="sms", value=number) if number else None


def email_address(email: str | None) -> Address | None:
    if not email or "@" not in email or any(c in email for c in "\r\n<>"):
        return None
    return Address(kind="email", value=email.strip())
