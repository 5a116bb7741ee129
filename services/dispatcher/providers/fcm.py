"""Firebase Cloud Messaging, HTTP v1 API.

``POST {base}/v1/projects/{project_id}/messages:send`` with an OAuth2 access token of
the app's service account (google-auth signs the JWT-bearer grant; the token is cached
and refreshed ahead of its expiry, one refresh at a time, off the event loop). The
client is shared by every app and speaks HTTP/2 where the server offers it (FCM does),
so one connection multiplexes many sends.

Error mapping (FCM's ``ErrorCode`` from the ``FcmError`` detail, else the HTTP status):

| FCM answer | Outcome |
|---|---|
| 200 | sent, ``provider_message_id`` = the message name |
| 404 UNREGISTERED | token_invalid (the app was uninstalled or the token expired) |
| 400 INVALID_ARGUMENT naming the registration token | token_invalid |
| 400 INVALID_ARGUMENT otherwise | rejected (payload_too_large when the message is too big) |
| 403 SENDER_ID_MISMATCH | misconfigured (the token belongs to another Firebase project) |
| 401 THIRD_PARTY_AUTH_ERROR, 403 PERMISSION_DENIED | auth |
| 401 UNAUTHENTICATED | a fresh access token and one more try; auth if refused again |
| 429 QUOTA_EXCEEDED | quota, transient, Retry-After |
| 500 INTERNAL, 503 UNAVAILABLE, other 5xx | unavailable, transient, Retry-After |
"""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import httpx
import orjson
import requests
import requests.adapters
from google.oauth2 import service_account

from services.dispatcher.providers.base import (
    AUTH,
    MISCONFIGURED,
    NETWORK,
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
from services.dispatcher.providers.http import HttpOptions, transport_failure

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
# Refresh this long before the token's expiry, so no send carries a token that dies
# on the way.
REFRESH_MARGIN = timedelta(minutes=5)
JOB_KEY = "hodhod_job_id"
# After Google refused the service account, sends fail fast for this long instead of
# each asking for a token again.
REFUSED_FOR = timedelta(seconds=30)


def fcm_message(
    message: Message, token: str, *, android_channel_id: str | None = None
) -> dict[str, Any]:
    """The v1 ``message`` object for one device token. Pure.

    A silent message has no ``notification`` block (a data message the app handles in
    the background; on iOS through FCM, ``content-available`` with priority 5). The URL
    and the job id ride in ``data`` (strings only) for the SDK's open tracking.
    """
    data = dict(message.data)
    data[JOB_KEY] = message.job_id
    if message.url:
        data.setdefault("url", message.url)
    out: dict[str, Any] = {"token": token, "data": data}
    android: dict[str, Any] = {"priority": "HIGH" if message.priority == "high" else "NORMAL"}
    if message.ttl_s is not None:
        android["ttl"] = f"{max(0, message.ttl_s)}s"
    if message.collapse_key:
        android["collapse_key"] = message.collapse_key
    apns_headers: dict[str, str] = {}
    if message.collapse_key:
        apns_headers["apns-collapse-id"] = message.collapse_key[:64]
    if message.silent:
        apns_headers.update({"apns-push-type": "background", "apns-priority": "5"})
        out["apns"] = {"headers": apns_headers, "payload": {"aps": {"content-available": 1}}}
    else:
        notification: dict[str, str] = {"body": message.body}
        if message.title:
            notification["title"] = message.title
        out["notification"] = notification
        android_notification: dict[str, str] = {}
        if android_channel_id:
            android_notification["channel_id"] = android_channel_id
        if message.collapse_key:
            android_notification["tag"] = message.collapse_key
        if android_notification:
            android["notification"] = android_notification
        apns_headers["apns-priority"] = "10" if message.priority == "high" else "5"
        aps: dict[str, Any] = {"sound": "default"}
        if message.category:
            aps["thread-id"] = message.category
        out["apns"] = {"headers": apns_headers, "payload": {"aps": aps}}
    if message.ttl_s is not None:
        expires = int(datetime.now(UTC).timestamp()) + max(0, message.ttl_s)
        out["apns"]["headers"]["apns-expiration"] = str(expires)
    out["android"] = android
    return out


def _error_parts(body: bytes) -> tuple[str, str, str | None, list[str]]:
    """(status, message, FcmError code, fields named by BadRequest violations)."""
    try:
        error = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return "", body[:200].decode("utf-8", "replace"), None, []
    if not isinstance(error, dict):
        return "", "", None, []
    code, fields = None, []
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == FCM_ERROR:
            code = detail.get("errorCode")
        elif detail.get("@type") == BAD_REQUEST:
            fields += [str(v.get("field", "")) for v in detail.get("fieldViolations") or []]
    return str(error.get("status", "")), str(error.get("message", "")), code, fields


def fcm_outcome(status: int, body: bytes, headers: httpx.Headers | dict[str, str]) -> Outcome:
    """Map one FCM answer to an Outcome (the table in the module docstring). Pure."""
    if status == 200:
        try:
            name = orjson.loads(body).get("name")
        except (orjson.JSONDecodeError, AttributeError):
            name = None
        return sent("fcm", name if isinstance(name, str) else None)
    rpc_status, text, code, fields = _error_parts(body)
    wait = retry_after(headers.get("retry-after"))
    described = f"FCM {status} {code or rpc_status}: {text}".strip()
    if code == "UNREGISTERED" or (status == 404 and code is None):
        return failed("fcm", TOKEN_INVALID, described, token_invalid=True)
    if code == "SENDER_ID_MISMATCH":
        return failed("fcm", MISCONFIGURED, described)
    if code == "QUOTA_EXCEEDED" or status == 429:
        return failed("fcm", QUOTA, described, transient=True, retry_after_s=wait)
    if code in ("UNAVAILABLE", "INTERNAL") or status >= 500:
        return failed("fcm", UNAVAILABLE, described, transient=True, retry_after_s=wait)
    if code == "THIRD_PARTY_AUTH_ERROR" or status in (401, 403):
        return failed("fcm", AUTH, described)
    if status == 400 or code == "INVALID_ARGUMENT":
        lowered = text.lower()
        if "message.token" in fields or "registration token" in lowered:
            return failed("fcm", TOKEN_INVALID, described, token_invalid=True)
        if "too big" in lowered or "too large" in lowered:
            return failed("fcm", PAYLOAD_TOO_LARGE, described)
        return failed("fcm", REJECTED, described)
    return failed("fcm", REJECTED, described)


class FcmProvider:
    """One app's FCM sender. ``client`` is shared (the registry owns and closes it);
    ``token_uri`` replaces the service account's own (the fixed Google endpoint in
    production, so an uploaded file cannot point the dispatcher elsewhere)."""

    name = "fcm"

    def __init__(
        self,
        *,
        service_account_info: dict[str, Any],
        client: httpx.AsyncClient,
        base_url: str,
        token_uri: str,
        options: HttpOptions,
        android_channel_id: str | None = None,
        project_id: str | None = None,
    ) -> None:
        info = {**service_account_info, "token_uri": token_uri}
        self._credentials = service_account.Credentials.from_service_account_info(
            info, scopes=[SCOPE]
        )
        self._project = project_id or str(service_account_info["project_id"])
        self._url = f"{base_url.rstrip('/')}/v1/projects/{self._project}/messages:send"
        self._client = client
        self._options = options
        self._channel = android_channel_id
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expiry: datetime | None = None
        self._session: requests.Session | None = None
        self._refused: tuple[Outcome, datetime] | None = None

    @property
    def project_id(self) -> str:
        return self._project

    async def _access_token(self, *, stale: str | None = None) -> str:
        """A live access token. ``stale``: the token FCM just refused, to be replaced
        unless another send replaced it meanwhile. Raises google.auth errors."""
        now = datetime.now(UTC)
        token = self._token
        if token is not None and token != stale and self._expiry and now < self._expiry:
            return token
        async with self._lock:
            if self._token is not None and self._token != stale and self._expiry:
                if datetime.now(UTC) < self._expiry:
                    return self._token
            await asyncio.to_thread(self._refresh)
            assert self._token is not None
            return self._token

    def _refresh(self) -> None:
        # google-auth's transports are synchronous; this runs in a worker thread, once an
        # hour per app, never on the event loop.
        if self._session is None:
            self._session = _session(self._options)
        request = google.auth.transport.requests.Request(self._session)
        self._credentials.refresh(request)
        expiry = self._credentials.expiry  # naive UTC
        lifetime = (
            expiry.replace(tzinfo=UTC) - REFRESH_MARGIN
            if expiry
            else datetime.now(UTC) + timedelta(minutes=30)
        )
        self._token, self._expiry = self._credentials.token, lifetime

    async def send(self, message: Message, address: Address) -> Outcome:
        if address.kind != "fcm":
            raise ValueError(f"the FCM provider cannot send to a {address.kind} address")
        body = orjson.dumps(
            {"message": fcm_message(message, address.value, android_channel_id=self._channel)}
        )
        stale: str | None = None
        for _ in range(2):
            if self._refused is not None and datetime.now(UTC) < self._refused[1]:
                return self._refused[0]
            try:
                token = await self._access_token(stale=stale)
            except google.auth.exceptions.GoogleAuthError as exc:
                outcome = _token_failure(exc)
                if not outcome.transient:
                    self._refused = (outcome, datetime.now(UTC) + REFUSED_FOR)
                return outcome
            try:
                response = await self._client.post(
                    self._url,
                    content=body,
                    headers={
                        "authorization": f"Bearer {token}",
                        "content-type": "application/json; charset=UTF-8",
                    },
                )
            except httpx.HTTPError as exc:
                return transport_failure(self.name, exc)
            if response.status_code == 401 and b"UNAUTHENTICATED" in response.content:
                stale = token  # revoked or expired early: one fresh token, one more try
                continue
            return fcm_outcome(response.status_code, response.content, response.headers)
        return fcm_outcome(response.status_code, response.content, response.headers)

    async def aclose(self) -> None:
        if self._session is not None:
            self._session.close()


class _TlsAdapter(requests.adapters.HTTPAdapter):
    """requests with the providers' TLS context (the system's CAs plus the extra
    bundle), instead of certifi's or an environment variable's bundle."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


def _session(options: HttpOptions) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", _TlsAdapter(options.ssl_context()))
    return session


def _token_failure(exc: google.auth.exceptions.GoogleAuthError) -> Outcome:
    """A token refresh that failed: Google's answer names the problem (no secret)."""
    if isinstance(exc, google.auth.exceptions.TransportError) or exc.retryable:
        return failed("fcm", NETWORK, f"OAuth token refresh failed: {exc}", transient=True)
    return failed("fcm", AUTH, f"OAuth token refresh refused: {exc}")
