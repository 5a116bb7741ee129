"""A local web push service (RFC 8030) that reads what it is sent as a browser would.

``subscribe()`` plays the browser: a P-256 key pair and a 16-byte auth secret per
subscription, and an endpoint here. ``POST /push/{id}`` requires ``TTL`` and
``Content-Encoding: aes128gcm``, checks the VAPID ``Authorization: vapid t=…, k=…``
(the JWT's ES256 signature by ``k``, ``aud`` = this origin, ``exp`` in the future and
at most 24 h away, ``sub`` a mailto: or https: contact, and ``k`` the subscription's
application server key when it was given one), decrypts the body with the
subscription's private key (http-ece, RFC 8291), records the plaintext and answers 201
with a ``Location``. Removed subscriptions answer 410, unknown ones 404.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import http_ece
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from tests.fakes.common import Script
from tests.fakes.server import FakeServer, Request, Response, _Drop


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class _Subscription:
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    server_key: str | None
    active: bool = True


@dataclass
class Push:
    subscription_id: str
    headers: dict[str, str]
    payload: dict[str, Any]
    claims: dict[str, Any]


@dataclass
class FakePushService:
    script: Script = field(default_factory=Script)
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    received: list[Push] = field(default_factory=list)
    server: FakeServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    def subscribe(self, application_server_key: str | None = None) -> dict[str, Any]:
        """A browser's ``PushSubscription.toJSON()``: endpoint and keys."""
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        sub_id = uuid.uuid4().hex
        self.subscriptions[sub_id] = _Subscription(key, auth, application_server_key)
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{self.base_url}/push/{sub_id}",
            "keys": {"p256dh": b64url(point), "auth": b64url(auth)},
        }

    def unsubscribe(self, endpoint: str) -> None:
        self.subscriptions[endpoint.rsplit("/", 1)[-1]].active = False

    async def handle(self, request: Request) -> Response | _Drop:
        if request.method != "POST" or not request.path.startswith("/push/"):
            return Response(404)
        sub_id = request.path[len("/push/") :]
        subscription = self.subscriptions.get(sub_id)
        if subscription is None:
            return Response(404, b"no such subscription")
        if not subscription.active:
            return Response(410, b"subscription expired")
        scripted = await self.script.apply(request)
        if scripted is not None:
            return scripted
        headers = request.headers
        if not headers.get("ttl", "").isdigit():
            return Response(400, b"TTL header required")
        if headers.get("content-encoding") != "aes128gcm":
            return Response(400, b"Content-Encoding must be aes128gcm")
        claims = self._vapid(headers.get("authorization", ""), subscription)
        if isinstance(claims, Response):
            return claims
        if len(request.body) > 4096:
            return Response(413, b"payload too large")
        try:
            plaintext = http_ece.decrypt(
                request.body,
                private_key=subscription.private_key,
                auth_secret=subscription.auth,
                version="aes128gcm",
            )
            payload = orjson.loads(plaintext)
        except Exception as exc:
            return Response(400, f"cannot decrypt: {type(exc).__name__}".encode())
        self.received.append(Push(sub_id, dict(headers), payload, claims))
        return Response(201, b"", {"location": f"{self.base_url}/message/{uuid.uuid4().hex}"})

    def _vapid(self, auth: str, subscription: _Subscription) -> dict[str, Any] | Response:
        scheme, _, rest = auth.partition(" ")
        if scheme.lower() != "vapid":
            return Response(401, b"VAPID authorization required")
        parts = dict(p.strip().split("=", 1) for p in rest.split(",") if "=" in p)
        if "t" not in parts or "k" not in parts:
            return Response(401, b"vapid t= and k= required")
        try:
            if not Vapid02.verify(auth):
                return Response(401, b"bad VAPID signature")
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(parts["k"]))
            claims: dict[str, Any] = jwt.decode(
                parts["t"],
                key,
                algorithms=["ES256"],
                audience=self._origin(),
                options={"require": ["aud", "exp", "sub"]},
            )
        except (jwt.InvalidTokenError, ValueError, AssertionError) as exc:
            return Response(401, f"bad VAPID token: {exc}".encode())
        if claims["exp"] > time.time() + 24 * 3600:
            return Response(401, b"VAPID exp more than 24 hours away")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return Response(401, b"VAPID sub must be mailto: or https:")
        if subscription.server_key is not None and subscription.server_key != parts["k"]:
            return Response(403, b"VAPID key does not match the subscription")
        return claims

    def _origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"


async def start() -> FakePushService:
    fake = FakePushService()
    fake.server = await FakeServer(fake.handle).start()
    return fake
