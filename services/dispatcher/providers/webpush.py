"""Web push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload encryption
(RFC 8291), through pywebpush (encryption, by http-ece) and py-vapid (the signed JWT).

``POST {subscription endpoint}`` with the encrypted JSON payload and the headers
``TTL`` (seconds the push service keeps it; default 3 days), ``Urgency`` (high or
normal), ``Topic`` (the collapse key, as base64url of at most 32 characters: a newer
message with the same topic replaces an undelivered one), ``Content-Encoding:
aes128gcm`` and ``Authorization: vapid t=<JWT>, k=<public key>``. The JWT (aud = the
endpoint's origin, sub = the app's contact) is reused per push service for 12 hours.

| push service answer | Outcome |
|---|---|
| 201 / 202 | sent, ``provider_message_id`` = the ``Location`` header |
| 404, 410 | token_invalid (the subscription expired or was removed) |
| 413 (or a payload over 4 KB, not sent) | payload_too_large |
| 429 | quota, transient, Retry-After |
| 401, 403 | auth (the VAPID key does not match the subscription's) |
| other 4xx | rejected |
| 5xx | unavailable, transient, Retry-After |
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02
from pywebpush import WebPusher, WebPushException

from services.dispatcher.providers.base import (
    AUTH,
    PAYLOAD_TOO_LARGE,
    QUOTA,
    REJECTED,
    TOKEN_INVALID,
    UNAVAILABLE,
    Address,
    Message,
    Outcome,
    failed,
    retry_after,
    sent,
)
from services.dispatcher.providers.http import transport_failure

DEFAULT_TTL_S = 3 * 24 * 3600
# RFC 8291: a push message body is at most 4096 bytes; aes128gcm adds a 86-byte header
# (salt, record size, key id) and a 16-byte tag plus one padding delimiter.
MAX_PLAINTEXT = 4096 - 86 - 17
JWT_LIFETIME_S = 12 * 3600
TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def load_vapid(private_key: str) -> Vapid02:
    """A VAPID key from its PEM, or the base64url raw (32-byte) or DER forms web-push
    tools print. Raises ValueError when it is none of them."""
    text = private_key.strip()
    try:
        if text.startswith("-----BEGIN"):
            return Vapid02.from_pem(text.encode())
        return Vapid02.from_string(text)
    except Exception as exc:
        raise ValueError(f"not a VAPID private key ({type(exc).__name__})") from None


def public_key(vapid: Vapid02) -> str:
    """The application server key the browser subscribes with (base64url, no padding)."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def webpush_payload(message: Message) -> bytes:
    """What the service worker receives, as JSON. Pure."""
    body: dict[str, Any] = {"job_id": message.job_id, "body": message.body}
    if message.title:
        body["title"] = message.title
    if message.url:
        body["url"] = message.url
    if message.data:
        body["data"] = message.data
    if message.collapse_key:
        body["tag"] = message.collapse_key
    if message.silent:
        body["silent"] = True
    return orjson.dumps(body)


def topic_of(collapse_key: str) -> str:
    """A ``Topic`` header value for ``collapse_key``: itself when it is already base64url
    of at most 32 characters, else a digest of it of that form. Pure."""
    if TOPIC_RE.match(collapse_key):
        return collapse_key
    digest = hashlib.sha256(collapse_key.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:32]


def webpush_outcome(status: int, body: bytes, headers: httpx.Headers | dict[str, str]) -> Outcome:
    """Map one push service answer to an Outcome (the table above). Pure."""
    if status in (200, 201, 202):
        return sent("webpush", headers.get("location"))
    text = body[:200].decode("utf-8", "replace").strip()
    described = f"push service {status}" + (f": {text}" if text else "")
    wait = retry_after(headers.get("retry-after"))
    if status in (404, 410):
        return failed("webpush", TOKEN_INVALID, described, token_invalid=True)
    if status == 413:
        return failed("webpush", PAYLOAD_TOO_LARGE, described)
    if status == 429:
        return failed("webpush", QUOTA, described, transient=True, retry_after_s=wait)
    if status >= 500:
        return failed("webpush", UNAVAILABLE, described, transient=True, retry_after_s=wait)
    if status in (401, 403):
        return failed("webpush", AUTH, described)
    return failed("webpush", REJECTED, described)


class WebPushProvider:
    """One app's web push sender. ``client`` is shared by every app (the registry
    closes it). ``allow_http`` lets endpoints be plain http (tests, development)."""

    name = "webpush"

    def __init__(
        self,
        *,
        private_key: str,
        subject: str,
        client: httpx.AsyncClient,
        allow_http: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._vapid = load_vapid(private_key)
        self._subject = subject
        self._client = client
        self._allow_http = allow_http
        self._clock = clock
        self._signed: dict[str, tuple[str, float]] = {}

    def _authorization(self, audience: str) -> str:
        now = self._clock()
        cached = self._signed.get(audience)
        if cached is not None and cached[1] - now > 3600:
            return cached[0]
        expires = int(now) + JWT_LIFETIME_S
        header = self._vapid.sign({"aud": audience, "sub": self._subject, "exp": expires})
        value = str(header["Authorization"])
        self._signed[audience] = (value, float(expires))
        return value

    async def send(self, message: Message, address: Address) -> Outcome:
        if address.kind != "webpush":
            raise ValueError(f"the web push provider cannot send to a {address.kind} address")
        parts = urlsplit(address.value)
        if parts.scheme != "https" and not (self._allow_http and parts.scheme == "http"):
            return failed(self.name, TOKEN_INVALID, "endpoint is not https", token_invalid=True)
        payload = webpush_payload(message)
        if len(payload) > MAX_PLAINTEXT:
            return failed(
                self.name,
                PAYLOAD_TOO_LARGE,
                f"payload of {len(payload)} bytes; web push takes at most {MAX_PLAINTEXT}",
            )
        try:
            subscription = {"endpoint": address.value, "keys": dict(address.keys)}
            encrypted = WebPusher(subscription).encode(payload, content_encoding="aes128gcm")
        except (WebPushException, ValueError, TypeError) as exc:
            # Keys that do not decode as a P-256 point and a 16-byte secret: the
            # subscription can never be used.
            reason = exc.message if isinstance(exc, WebPushException) else type(exc).__name__
            return failed(
                self.name, TOKEN_INVALID, f"bad subscription keys: {reason}", token_invalid=True
            )
        headers = {
            "ttl": str(DEFAULT_TTL_S if message.ttl_s is None else max(0, message.ttl_s)),
            "urgency": "high" if message.priority == "high" else "normal",
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "authorization": self._authorization(f"{parts.scheme}://{parts.netloc}"),
        }
        if message.collapse_key:
            headers["topic"] = topic_of(message.collapse_key)
        try:
            response = await self._client.post(
                address.value, content=encrypted["body"], headers=headers
            )
        except httpx.HTTPError as exc:
            return transport_failure(self.name, exc)
        return webpush_outcome(response.status_code, response.content, response.headers)

    async def aclose(self) -> None:
        return None
