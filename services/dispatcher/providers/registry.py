"""Which provider carries a message: per app, from the app's stored credentials.

``ProviderRegistry`` builds each app's providers from ``dispatcher_provider_credentials``
(secrets opened with the dispatcher's keyring), caches them, and checks the app's
credential versions again after ``HODHOD_DISPATCHER_CREDENTIALS_TTL_S`` (one indexed
read) — a changed, disabled or deleted credential rebuilds or drops just that provider,
and ``invalidate(app_id)`` forces the check at the next lookup (the admin endpoints of
this process call it; other replicas see the change within the TTL). Clients to shared
hosts (FCM, web push, SMS gateways) are pooled across apps; APNs and SMTP keep a
connection pool per app.

The router: an address's kind names the provider (``fcm`` → FCM, ``apns`` → APNs,
``webpush`` → web push, ``sms`` → Kavenegar else the generic gateway, ``email`` → SMTP);
a channel without an address (``for_channel``) takes the same order (``push``: FCM,
else APNs). An app with no usable credentials for it gets the ``log`` provider when the
log fallback is on, else None (the core suppresses the job with reason ``no_provider``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.settings import DispatcherSettings
from services.dispatcher import credentials_store
from services.dispatcher.credentials import Keyring, SecretsKeyError
from services.dispatcher.providers import redact
from services.dispatcher.providers.apns import ApnsProvider
from services.dispatcher.providers.base import Address, Provider
from services.dispatcher.providers.fcm import FcmProvider
from services.dispatcher.providers.http import HttpOptions, client
from services.dispatcher.providers.log import LogProvider
from services.dispatcher.providers.sms_http import HttpSmsProvider, KavenegarProvider
from services.dispatcher.providers.smtp import SmtpProvider
from services.dispatcher.providers.webpush import WebPushProvider

log = logging.getLogger(__name__)

BY_KIND: dict[str, tuple[str, ...]] = {
    "fcm": ("fcm",),
    "apns": ("apns",),
    "webpush": ("webpush",),
    "sms": ("kavenegar", "sms_http"),
    "email": ("smtp",),
}
BY_CHANNEL: dict[str, tuple[str, ...]] = {
    "push": ("fcm", "apns"),
    "web_push": ("webpush",),
    "sms": ("kavenegar", "sms_http"),
    "email": ("smtp",),
}
# A replaced provider is closed this long after it stopped being handed out, so sends
# already holding it finish on its connections.
CLOSE_GRACE_S = 30.0

# Registries of this process, so the admin endpoints served here can invalidate them.
_LIVE: weakref.WeakSet[ProviderRegistry] = weakref.WeakSet()


def invalidate_everywhere(app_id: str) -> None:
    """Make every registry of this process check ``app_id``'s credentials again."""
    for registry in list(_LIVE):
        registry.invalidate(app_id)


@dataclass
class _App:
    checked_at: float
    versions: dict[str, tuple[int, bool]] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)


class ProviderRegistry:
    """Per-app providers (see the module docstring). Safe for concurrent use from one
    event loop. Lookups read Postgres in their own short transaction at most once per
    app per TTL; they never take the caller's session."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        keyring: Keyring,
        settings: DispatcherSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        redact.install()
        self._sessions = sessions
        self._keyring = keyring
        self._settings = settings
        self._clock = clock
        self._ttl = settings.dispatcher_credentials_ttl_s
        self._options = HttpOptions(
            timeout_s=settings.dispatcher_provider_timeout_s,
            max_connections=settings.dispatcher_provider_max_connections,
            ca_file=settings.dispatcher_provider_ca_file,
        )
        self._fcm_client = client(self._options, http2=True)
        self._webpush_client = client(self._options, http2=True)
        self._sms_client = client(self._options, http2=False)
        self.log_fallback = settings.log_fallback()
        self._log: Provider = LogProvider(sessions)
        self._apps: dict[str, _App] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()
        _LIVE.add(self)

    async def for_address(self, app_id: str, address: Address) -> Provider | None:
        """The provider for ``address`` (its kind decides), or the log provider /
        None when the app has no usable credentials for it. Raises for database errors
        only."""
        if address.kind == "log":
            return self._log
        return await self._pick(app_id, BY_KIND.get(address.kind, ()))

    async def for_channel(self, app_id: str, channel: str) -> Provider | None:
        """The provider for ``channel`` when there is no address to route by (``push``:
        FCM if configured, else APNs); ``log`` always gets the log provider, and
        ``in_app``/``inbox`` (stored by the dispatcher itself) the log provider under
        the fallback, else None."""
        if channel == "log":
            return self._log
        return await self._pick(app_id, BY_CHANNEL.get(channel, ()))

    async def providers(self, app_id: str) -> dict[str, Provider]:
        """Every usable provider of the app by name (admin checks, tests)."""
        return dict((await self._load(app_id)).providers)

    async def _pick(self, app_id: str, names: tuple[str, ...]) -> Provider | None:
        app = await self._load(app_id)
        for name in names:
            provider = app.providers.get(name)
            if provider is not None:
                return provider
        return self._log if self.log_fallback else None

    def invalidate(self, app_id: str | None = None) -> None:
        """Check the app's (or every app's) credentials again at the next lookup."""
        for key in [app_id] if app_id is not None else list(self._apps):
            app = self._apps.get(key)
            if app is not None:
                app.checked_at = float("-inf")

    async def _load(self, app_id: str) -> _App:
        app = self._apps.get(app_id)
        if app is not None and self._clock() - app.checked_at < self._ttl:
            return app
        lock = self._locks.setdefault(app_id, asyncio.Lock())
        async with lock:
            app = self._apps.get(app_id)
            if app is not None and self._clock() - app.checked_at < self._ttl:
                return app
            app = app or _App(checked_at=self._clock())
            async with self._sessions() as session, session.begin():
                current = await credentials_store.versions(session, app_id=app_id)
                changed = [
                    name
                    for name in set(current) | set(app.versions)
                    if current.get(name) != app.versions.get(name)
                ]
                rows = {
                    name: await credentials_store.get(session, app_id=app_id, provider=name)
                    for name in changed
                    if name in current and current[name][1]
                }
            for name in changed:
                old = app.providers.pop(name, None)
                if old is not None:
                    self._close_later(old)
                row = rows.get(name)
                if row is not None:
                    built = self._build(app_id, name, row.config, row.sealed)
                    if built is not None:
                        app.providers[name] = built
            app.versions = current
            app.checked_at = self._clock()
            self._apps[app_id] = app
            return app

    def _build(
        self, app_id: str, name: str, config: dict[str, Any], sealed: str
    ) -> Provider | None:
        """A provider from one row, or None (logged, without the secret) when it cannot
        be opened or built."""
        try:
            secret = self._keyring.open(sealed, app_id=app_id, provider=name)
        except SecretsKeyError as exc:
            log.error("cannot open the %s credentials of app %s: %s", name, app_id, exc)
            return None
        redact.register(secret)
        settings = self._settings
        try:
            if name == "fcm":
                return FcmProvider(
                    service_account_info=json.loads(secret),
                    client=self._fcm_client,
                    base_url=settings.dispatcher_fcm_url,
                    token_uri=settings.dispatcher_fcm_token_uri,
                    options=self._options,
                    android_channel_id=config.get("android_channel_id"),
                    project_id=config.get("project_id"),
                )
            if name == "apns":
                return ApnsProvider(
                    key_pem=secret,
                    key_id=config["key_id"],
                    team_id=config["team_id"],
                    topic=config["topic"],
                    environment=config.get("environment", "production"),
                    options=self._options,
                    base_url=settings.dispatcher_apns_url,
                )
            if name == "webpush":
                return WebPushProvider(
                    private_key=secret,
                    subject=config["subject"],
                    client=self._webpush_client,
                    allow_http=settings.insecure_endpoints(),
                )
            if name == "kavenegar":
                return KavenegarProvider(
                    api_key=secret,
                    client=self._sms_client,
                    sender=config.get("sender"),
                    base_url=settings.dispatcher_kavenegar_url,
                )
            if name == "sms_http":
                if config["url"].startswith("http://") and not settings.insecure_endpoints():
                    log.error("app %s: the SMS gateway URL is not https; not used", app_id)
                    return None
                return HttpSmsProvider(
                    url=config["url"],
                    secret=secret,
                    client=self._sms_client,
                    method=config.get("method", "POST"),
                    body=config.get("body"),
                    body_format=config.get("body_format", "json"),
                    headers=config.get("headers"),
                    sender=config.get("sender"),
                    message_id_path=config.get("message_id_path"),
                )
            if name == "smtp":
                return SmtpProvider(
                    host=config["host"],
                    port=int(config.get("port", 587)),
                    from_address=config["from_address"],
                    username=config.get("username"),
                    password=secret,
                    tls=config.get("tls", "starttls"),
                    from_name=config.get("from_name"),
                    reply_to=config.get("reply_to"),
                    timeout_s=settings.dispatcher_provider_timeout_s,
                    pool_size=int(config.get("pool_size", 2)),
                    tls_context=self._options.ssl_context(),
                )
        except (ValueError, KeyError, TypeError) as exc:
            log.error(
                "cannot build the %s provider of app %s: %s", name, app_id, type(exc).__name__
            )
            return None
        log.error("app %s has credentials for unknown provider %s", app_id, name)
        return None

    def _close_later(self, provider: Provider) -> None:
        async def close() -> None:
            await asyncio.sleep(CLOSE_GRACE_S)
            await provider.aclose()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every provider and the shared clients (the dispatcher's shutdown)."""
        for task in list(self._closing):
            task.cancel()
        providers = [p for app in self._apps.values() for p in app.providers.values()]
        self._apps.clear()
        for provider in providers:
            await provider.aclose()
        for shared in (self._fcm_client, self._webpush_client, self._sms_client):
            await shared.aclose()
