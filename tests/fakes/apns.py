"""A local APNs: HTTP/2 over TLS (a self-signed certificate the test trusts), checking
what Apple checks.

``POST /3/device/{token}``: the ``authorization: bearer`` JWT must be ES256, signed by a
key registered here (``register_key``: its public half, key id and team), its ``iss``
the key's team and its ``iat`` less than an hour old (else 403 ExpiredProviderToken);
``apns-topic`` must be one the team may push to; ``apns-push-type``, ``apns-priority``
(5 for background), ``apns-expiration`` and ``apns-collapse-id`` (≤ 64 bytes) are
validated, the payload must be JSON with ``aps`` and at most 4 KB. Tokens registered
with ``unregister`` answer 410 Unregistered with Apple's millisecond timestamp; tokens
that are not hex answer 400 BadDeviceToken. Answers carry ``apns-id``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.common import Certificate, Script
from tests.fakes.server import FakeServer, Request, Response, _Drop

PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm", "liveactivity"}


@dataclass
class _Key:
    team_id: str
    public_key: Any


@dataclass
class FakeApns:
    script: Script = field(default_factory=Script)
    keys: dict[str, _Key] = field(default_factory=dict)
    topics: dict[str, set[str]] = field(default_factory=dict)  # team → topics
    unregistered: dict[str, int] = field(default_factory=dict)  # token → ms timestamp
    received: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    provider_tokens: set[str] = field(default_factory=set)
    http_versions: set[str] = field(default_factory=set)
    server: FakeServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    def new_key(
        self, *, team_id: str = "TEAM123456", topic: str = "com.example.app"
    ) -> dict[str, str]:
        """A new .p8 key this fake accepts for ``team_id`` and ``topic``: its PEM, key id."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_id = uuid.uuid4().hex[:10].upper()
        self.keys[key_id] = _Key(team_id, key.public_key())
        self.topics.setdefault(team_id, set()).add(topic)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {"key_pem": pem, "key_id": key_id, "team_id": team_id, "topic": topic}

    def unregister(self, token: str, at_ms: int | None = None) -> None:
        self.unregistered[token] = at_ms if at_ms is not None else int(time.time() * 1000)

    async def handle(self, request: Request) -> Response | _Drop:
        self.http_versions.add(request.http_version)
        if request.method != "POST":
            return _reason(405, "MethodNotAllowed")
        if not request.path.startswith("/3/device/"):
            return _reason(404, "BadPath")
        token = request.path[len("/3/device/") :]
        headers = request.headers
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        problem = self._auth(headers)
        if problem is not None:
            return problem
        scripted = await self.script.apply(request)
        if scripted is not None:
            return scripted
        team = self._team(headers)
        topic = headers.get("apns-topic")
        if not topic:
            return _reason(400, "MissingTopic", apns_id)
        if topic not in self.topics.get(team, set()):
            return _reason(400, "TopicDisallowed", apns_id)
        push_type = headers.get("apns-push-type", "alert")
        if push_type not in PUSH_TYPES:
            return _reason(400, "InvalidPushType", apns_id)
        priority = headers.get("apns-priority", "10")
        if priority not in {"1", "5", "10"} or (push_type == "background" and priority != "5"):
            return _reason(400, "BadPriority", apns_id)
        if not headers.get("apns-expiration", "0").isdigit():
            return _reason(400, "BadExpirationDate", apns_id)
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return _reason(400, "BadCollapseId", apns_id)
        if not token:
            return _reason(400, "MissingDeviceToken", apns_id)
        if len(request.body) > 4096:
            return _reason(413, "PayloadTooLarge", apns_id)
        try:
            payload = orjson.loads(request.body) if request.body else None
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict) or "aps" not in payload:
            return _reason(400, "PayloadEmpty", apns_id)
        if token in self.unregistered:
            body = {"reason": "Unregistered", "timestamp": self.unregistered[token]}
            return Response(410, orjson.dumps(body), {"apns-id": apns_id})
        if not all(c in "0123456789abcdefABCDEF" for c in token):
            return _reason(400, "BadDeviceToken", apns_id)
        self.received.append((token, dict(headers), payload))
        return Response(200, b"", {"apns-id": apns_id, "apns-unique-id": str(uuid.uuid4())})

    def _team(self, headers: dict[str, str]) -> str:
        token = headers.get("authorization", "").removeprefix("bearer ")
        return self.keys[jwt.get_unverified_header(token)["kid"]].team_id

    def _auth(self, headers: dict[str, str]) -> Response | None:
        auth = headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return _reason(403, "MissingProviderToken")
        token = auth.removeprefix("bearer ")
        try:
            header = jwt.get_unverified_header(token)
            key = self.keys[header["kid"]]
            if header.get("alg") != "ES256":
                return _reason(403, "InvalidProviderToken")
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=["ES256"],
                options={"require": ["iss", "iat"], "verify_iat": False},
            )
        except (jwt.InvalidTokenError, KeyError):
            return _reason(403, "InvalidProviderToken")
        if claims["iss"] != key.team_id:
            return _reason(403, "InvalidProviderToken")
        if time.time() - float(claims["iat"]) > 3600:
            return _reason(403, "ExpiredProviderToken")
        self.provider_tokens.add(token)
        return None


def _reason(status: int, reason: str, apns_id: str | None = None) -> Response:
    headers = {"apns-id": apns_id} if apns_id else {}
    return Response(status, orjson.dumps({"reason": reason}), headers)


async def start(certificate: Certificate) -> FakeApns:
    fake = FakeApns()
    fake.server = await FakeServer(
        fake.handle, tls=certificate.server_context(), http2=True
    ).start()
    return fake
