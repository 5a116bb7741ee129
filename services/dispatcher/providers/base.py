"""The contract between the dispatcher's core and its provider adapters.

A provider delivers one rendered message to one address and answers with an
``Outcome``. It never takes a database session and never raises for what the provider
answered or for the network (connection refused, timeout, a dropped connection: a
``failed`` outcome with ``transient=True``); it raises only for programming errors (an
address of a kind it does not serve). Providers are safe to call concurrently from one
event loop; each keeps its connections pooled until ``aclose``.

Reason codes (``Outcome.reason``) are a small fixed vocabulary, so receipts and
dashboards can group by them: see ``REASONS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol, runtime_checkable

Channel = Literal["push", "web_push", "sms", "email", "in_app", "inbox", "log"]
AddressKind = Literal["fcm", "apns", "webpush", "sms", "email", "log"]

# Machine codes of a failed Outcome.
TOKEN_INVALID = "token_invalid"  # the device token / subscription is dead (uninstall signal)
INVALID_ADDRESS = "invalid_address"  # a phone number or mailbox the provider refuses
REJECTED = "rejected"  # the provider refused this message (bad field, bad payload)
PAYLOAD_TOO_LARGE = "payload_too_large"
AUTH = "auth"  # the app's credentials were refused (rotate them)
MISCONFIGURED = "misconfigured"  # credentials fine, settings wrong (topic, sender line)
INSUFFICIENT_CREDIT = "insufficient_credit"  # the app's gateway account is out of credit
QUOTA = "quota"  # rate limited by the provider (transient, often with retry_after_s)
UNAVAILABLE = "unavailable"  # the provider's servers failed (5xx; transient)
TIMEOUT = "timeout"  # no answer in time (transient; the message may have been sent)
NETWORK = "network"  # could not connect, or the connection dropped (transient)
UNSUPPORTED = "unsupported"  # the provider cannot carry this message (e.g. empty push)
REASONS = frozenset(
    {
        TOKEN_INVALID,
        INVALID_ADDRESS,
        REJECTED,
        PAYLOAD_TOO_LARGE,
        AUTH,
        MISCONFIGURED,
        INSUFFICIENT_CREDIT,
        QUOTA,
        UNAVAILABLE,
        TIMEOUT,
        NETWORK,
        UNSUPPORTED,
    }
)


@dataclass(frozen=True, slots=True)
class Message:
    """Rendered and ready to go; no template syntax left."""

    app_id: str
    job_id: str  # idempotency key at the provider where it has one
    channel: str  # push | web_push | sms | email | in_app | inbox | log
    title: str | None
    body: str
    url: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    subject: str | None = None  # email
    html: str | None = None  # email
    silent: bool = False  # data-only push (no alert)
    collapse_key: str | None = None
    ttl_s: int | None = None
    priority: Literal["high", "normal"] = "high"
    unsubscribe_url: str | None = None  # email List-Unsubscribe (https, one-click)
    category: str | None = None


@dataclass(frozen=True, slots=True)
class Address:
    """Where to: one device token, phone or mailbox. For ``log`` addresses the value
    is the user key (the log outbox records it)."""

    kind: AddressKind
    value: str  # token / E.164 phone / email / web push endpoint
    device_id: str | None = None
    keys: dict[str, str] = field(default_factory=dict)  # web push p256dh/auth


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Literal["sent", "failed"]
    provider: str
    provider_message_id: str | None = None
    reason: str | None = None  # machine code: token_invalid, rejected, quota, ...
    error: str | None = None  # human text, never a secret
    token_invalid: bool = False  # the address is dead (uninstall signal)
    invalid_since: datetime | None = None  # APNs 410 timestamp, when given
    transient: bool = False  # retrying later may succeed (5xx, 429, timeout)
    retry_after_s: float | None = None


@runtime_checkable
class Provider(Protocol):
    name: str  # "fcm", "apns", "webpush", "kavenegar", "sms_http", "smtp", "log"

    async def send(self, message: Message, address: Address) -> Outcome: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BulkProvider(Provider, Protocol):
    """A provider with a bulk call (Kavenegar's ``sendarray``, one SMTP session for
    many messages). ``send_many`` answers one Outcome per item, in order."""

    async def send_many(self, items: list[tuple[Message, Address]]) -> list[Outcome]: ...


def sent(provider: str, message_id: str | None) -> Outcome:
    return Outcome(status="sent", provider=provider, provider_message_id=message_id)


def failed(
    provider: str,
    reason: str,
    error: str,
    *,
    transient: bool = False,
    retry_after_s: float | None = None,
    token_invalid: bool = False,
    invalid_since: datetime | None = None,
) -> Outcome:
    """A failed Outcome; ``error`` is cut to the receipt's 1,024 characters."""
    assert reason in REASONS, reason
    return Outcome(
        status="failed",
        provider=provider,
        reason=reason,
        error=error[:1024],
        token_invalid=token_invalid,
        invalid_since=invalid_since,
        transient=transient,
        retry_after_s=retry_after_s,
    )


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None
    when absent or unreadable. Never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
