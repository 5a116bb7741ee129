"""A local FCM: Google's OAuth2 token endpoint and the FCM HTTP v1 send endpoint.

- ``POST /token`` takes the JWT-bearer grant (RFC 7523) google-auth sends for a service
  account, verifies the assertion's RS256 signature with the account's public key and
  its claims (iss, aud = Google's token endpoint, scope, iat/exp), and issues an access token.
- ``POST /v1/projects/{project}/messages:send`` checks the bearer token (issued here,
  not expired, for that project), validates the message as FCM does (one target, string
  data values, 4 KB payload) and answers ``{"name": "projects/p/messages/…"}``, or
  FCM's error body (``google.rpc.Status`` with an ``FcmError`` detail).

Tokens registered with ``unregister`` answer 404 UNREGISTERED; tokens starting with
``bad-`` answer 400 INVALID_ARGUMENT as a malformed registration token does. Failures
are scripted with ``script.add(Failure(...))``. Serves HTTP/1.1, and HTTP/2 over TLS
when started with a certificate. Run alone (for benchmarks) with
``python -m tests.fakes.fcm --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.common import Certificate, Script
from tests.fakes.server import FakeServer, Request, Response, _Drop

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth (and Google) use this audience whatever the token URI it posts to.
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
MAX_PAYLOAD = 4096


def fcm_error(code: int, status: str, message: str, error_code: str | None = None) -> bytes:
    """FCM's error body: a google.rpc.Status with an FcmError detail."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if error_code is not None:
        error["details"] = [{"@type": FCM_ERROR, "errorCode": error_code}]
    return orjson.dumps({"error": error})


@dataclass
class _Account:
    project_id: str
    public_key: Any


@dataclass
class FakeFcm:
    """The fake's state: accounts it knows, tokens it issued, messages it accepted."""

    record: bool = True
    script: Script = field(default_factory=Script)  # send endpoint
    token_script: Script = field(default_factory=Script)  # token endpoint
    token_lifetime_s: int = 3600
    accounts: dict[str, _Account] = field(default_factory=dict)
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    unregistered: set[str] = field(default_factory=set)
    messages: list[tuple[str, dict[str, Any], Request]] = field(default_factory=list)
    token_requests: int = 0
    sends: int = 0
    server: FakeServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def service_account(self, project_id: str = "hodhod-test") -> dict[str, str]:
        """A new service account of ``project_id`` this fake accepts: the JSON a
        Firebase console download holds, its ``token_uri`` pointing here."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email = f"sa-{secrets.token_hex(4)}@{project_id}.iam.gserviceaccount.com"
        self.accounts[email] = _Account(project_id, key.public_key())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri if self.server else "https://oauth2.googleapis.com/token",
        }

    def unregister(self, token: str) -> None:
        self.unregistered.add(token)

    def expire_access_tokens(self) -> None:
        """Every issued access token stops working (as after revocation)."""
        self.access_tokens.clear()

    async def handle(self, request: Request) -> Response | _Drop:
        if request.path == "/token":
            return await self._token(request)
        if request.path.startswith("/v1/projects/") and request.path.endswith("/messages:send"):
            return await self._send(request)
        return Response(404, b'{"error": {"code": 404, "status": "NOT_FOUND"}}')

    async def _token(self, request: Request) -> Response | _Drop:
        self.token_requests += 1
        scripted = await self.token_script.apply(request)
        if scripted is not None:
            return scripted
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != JWT_BEARER or "assertion" not in form:
            return _oauth_error("unsupported_grant_type", "expected the JWT bearer grant")
        try:
            unverified = jwt.decode(form["assertion"], options={"verify_signature": False})
            account = self.accounts[unverified["iss"]]
            claims = jwt.decode(
                form["assertion"],
                account.public_key,
                algorithms=["RS256"],
                audience=GOOGLE_AUDIENCE,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except (jwt.InvalidTokenError, KeyError) as exc:
            return _oauth_error("invalid_grant", f"Invalid JWT Signature: {exc}")
        if claims["exp"] - claims["iat"] > 3600:
            return _oauth_error("invalid_grant", "Invalid JWT: exp too far from iat")
        if SCOPE not in str(claims["scope"]).split():
            return _oauth_error("invalid_scope", "firebase.messaging scope missing")
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.access_tokens[token] = (account.project_id, time.time() + self.token_lifetime_s)
        body = {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"}
        return Response(200, orjson.dumps(body), {"content-type": "application/json"})

    async def _send(self, request: Request) -> Response | _Drop:
        self.sends += 1
        project = request.path[len("/v1/projects/") : -len("/messages:send")]
        auth = request.headers.get("authorization", "")
        granted = self.access_tokens.get(auth.removeprefix("Bearer "))
        if not auth.startswith("Bearer ") or granted is None or granted[1] < time.time():
            return _json(
                401,
                fcm_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                ),
            )
        if granted[0] != project:
            return _json(403, fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch"))
        scripted = await self.script.apply(request)
        if scripted is not None:
            return scripted
        try:
            message = orjson.loads(request.body)["message"]
            assert isinstance(message, dict)
        except (orjson.JSONDecodeError, KeyError, AssertionError, TypeError):
            return _json(400, fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))
        problem = _invalid(message)
        if problem is not None:
            return _json(400, problem)
        token = message.get("token")
        if token in self.unregistered:
            return _json(
                404, fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
            )
        if isinstance(token, str) and token.startswith("bad-"):
            return _json(
                400,
                fcm_error(
                    400,
                    "INVALID_ARGUMENT",
                    "The registration token is not a valid FCM registration token",
                    "INVALID_ARGUMENT",
                ),
            )
        if self.record:
            self.messages.append((project, message, request))
        name = f"projects/{project}/messages/0:{self.sends}%{secrets.token_hex(4)}"
        return _json(200, orjson.dumps({"name": name}))


def _invalid(message: dict[str, Any]) -> bytes | None:
    targets = [k for k in ("token", "topic", "condition") if message.get(k)]
    if len(targets) != 1:
        return fcm_error(400, "INVALID_ARGUMENT", "Exactly one of token, topic or condition")
    for i, (key, value) in enumerate((message.get("data") or {}).items()):
        if not isinstance(value, str):
            return orjson.dumps(
                {
                    "error": {
                        "code": 400,
                        "message": f"Invalid value at 'message.data[{i}].value' (TYPE_STRING)",
                        "status": "INVALID_ARGUMENT",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.BadRequest",
                                "fieldViolations": [
                                    {"field": f"message.data[{i}].value", "description": key}
                                ],
                            }
                        ],
                    }
                }
            )
    size = len(orjson.dumps(message.get("notification") or {})) + len(
        orjson.dumps(message.get("data") or {})
    )
    if size > MAX_PAYLOAD:
        return fcm_error(400, "INVALID_ARGUMENT", "Message is too big", "INVALID_ARGUMENT")
    return None


def _json(status: int, body: bytes) -> Response:
    return Response(status, body, {"content-type": "application/json; charset=UTF-8"})


def _oauth_error(error: str, description: str) -> Response:
    return _json(400, json.dumps({"error": error, "error_description": description}).encode())


async def start(
    *, certificate: Certificate | None = None, port: int = 0, record: bool = True
) -> FakeFcm:
    """A running fake FCM (HTTP/2 over TLS with ``certificate``, else HTTP/1.1)."""
    fake = FakeFcm(record=record)
    tls = certificate.server_context() if certificate else None
    fake.server = await FakeServer(fake.handle, tls=tls, http2=tls is not None).start(port)
    return fake


def _main() -> None:
    parser = argparse.ArgumentParser(description="a local fake FCM (token + send endpoints)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    async def serve() -> None:
        fake = await start(port=args.port, record=False)
        # The benchmark reads the accounts it can use from stdout, one JSON per line.
        print(json.dumps(fake.service_account("bench")), flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


if __name__ == "__main__":
    _main()
