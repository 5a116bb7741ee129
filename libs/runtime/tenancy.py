"""Accounts, apps and API keys — and authenticating a request to its app.

The tables are written by admin (and ``hodhod app create``) and read by every HTTP
service, which is why they live in the kit. Keys are random, shown once, and stored as
SHA-256 digests: a key has 190 bits of entropy, so a slow hash would add nothing.

Three kinds: an SDK key (public, ``X-Hodhod-Key``: events and clicks of its app), a
server key and an admin token (secret, ``Authorization: Bearer``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import ForeignKey, String, false, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.errors import Forbidden, Unauthorized
from libs.runtime.postgres import Base

KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
KEY_LENGTH = 32
CACHE_TTL_S = 30.0


class KeyKind(StrEnum):
    SDK = "sdk"
    SERVER = "server"
    ADMIN = "admin"


KEY_PREFIX = {KeyKind.SDK: "hk_sdk_", KeyKind.SERVER: "hk_srv_", KeyKind.ADMIN: "hk_adm_"}


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class App(Base):
    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Tehran")
    created_at: Mapped[datetime]
    # SDK requests must carry a valid signature (ingest answers 401 otherwise and the
    # attribution service rejects their installs as ``bad_signature``).
    require_signature: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Fraud thresholds that differ from the defaults (see services/attribution/fraud.py,
    # ``FraudConfig``); admin validates, the attribution service reads.
    fraud: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )


class SdkSecret(Base):
    """An app's SDK signing secret. Kept in clear: verifying an HMAC needs the secret
    itself (a digest would not do). Shown once at creation, never logged; several may be
    active during a rotation."""

    __tablename__ = "app_sdk_secrets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ApiKey(Base):
    __tablename__ = "api_keys"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # The first characters, kept to let a person recognise a key in a list.
    display_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


def new_key(kind: KeyKind) -> str:
    return KEY_PREFIX[kind] + "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_app_id() -> str:
    return "app_" + "".join(secrets.choice(KEY_ALPHABET[:36]) for _ in range(12))


@dataclass(frozen=True, slots=True)
class AppKeys:
    app_id: str
    sdk_key: str
    server_key: str
    admin_token: str


async def create_app_with_keys(
    session: AsyncSession,
    *,
    name: str,
    account_name: str = "default",
    timezone: str = "Asia/Tehran",
) -> AppKeys:
    """Insert an app (and its account if new) with one key of each kind. Does not commit.

    The raw keys exist only in the returned value: only digests are stored.
    """
    now = datetime.now(UTC)
    account_id = "acc_" + hashlib.sha256(account_name.encode()).hexdigest()[:12]
    if await session.get(Account, account_id) is None:
        session.add(Account(id=account_id, name=account_name, created_at=now))
    app_id = new_app_id()
    session.add(App(id=app_id, account_id=account_id, name=name, timezone=timezone, created_at=now))
    await session.flush()
    raw = {kind: new_key(kind) for kind in KeyKind}
    for kind, key in raw.items():
        session.add(
            ApiKey(
                key_hash=hash_key(key),
                app_id=app_id,
                kind=kind.value,
                display_prefix=key[:11],
                created_at=now,
                revoked_at=None,
            )
        )
    await session.flush()
    return AppKeys(app_id, raw[KeyKind.SDK], raw[KeyKind.SERVER], raw[KeyKind.ADMIN])


async def provision_app(
    database_url: str, *, name: str, account_name: str = "default", timezone: str = "Asia/Tehran"
) -> AppKeys:
    """``create_app_with_keys`` in its own engine and transaction (CLI, tests). Commits."""
    from libs.runtime.postgres import create_engine, session_factory

    engine = create_engine(database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session, session.begin():
            return await create_app_with_keys(
                session, name=name, account_name=account_name, timezone=timezone
            )
    finally:
        await engine.dispose()


class KeyResolver:
    """Looks a raw key up by digest, with a short per-process cache.

    A revoked key stops working within ``CACHE_TTL_S``. Raises ``Unauthorized`` for an
    unknown or revoked key and ``Forbidden`` for a key of the wrong kind.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: dict[str, tuple[float, str | None, str | None]] = {}

    async def resolve(self, raw: str, *, allowed: frozenset[KeyKind], header: str) -> str:
        if not raw:
            raise Unauthorized(f"missing API key in {header}", field=header)
        digest = hash_key(raw)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is None or cached[0] < now:
            async with self._sessions() as session:
                row = (
                    await session.execute(
                        select(ApiKey.app_id, ApiKey.kind, ApiKey.revoked_at).where(
                            ApiKey.key_hash == digest
                        )
                    )
                ).first()
            if row is None or row.revoked_at is not None:
                cached = (now + CACHE_TTL_S, None, None)
            else:
                cached = (now + CACHE_TTL_S, row.app_id, row.kind)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = cached
        _, app_id, kind = cached
        if app_id is None or kind is None:
            raise Unauthorized("unknown or revoked API key", field=header)
        if KeyKind(kind) not in allowed:
            wanted = " or ".join(sorted(k.value for k in allowed))
            raise Forbidden(
                f"a {kind} key cannot call this endpoint; it needs a {wanted} key",
                field=header,
                code="wrong_key_kind",
            )
        return app_id


def _resolver(request: Request) -> KeyResolver:
    resolver: KeyResolver = request.app.state.key_resolver
    return resolver


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("expected 'Authorization: Bearer <key>'", field="Authorization")
    return token.strip()


async def sdk_app(request: Request) -> str:
    """The app of the ``X-Hodhod-Key`` SDK key (a server key is accepted too)."""
    raw = request.headers.get("x-hodhod-key", "")
    if not raw and request.headers.get("authorization"):
        raw = _bearer(request)
    return await _resolver(request).resolve(
        raw, allowed=frozenset({KeyKind.SDK, KeyKind.SERVER}), header="X-Hodhod-Key"
    )


async def server_app(request: Request) -> str:
    return await _resolver(request).resolve(
        _bearer(request), allowed=frozenset({KeyKind.SERVER}), header="Authorization"
    )


async def admin_app(request: Request) -> str:
    return await _resolver(request).resolve(
        _bearer(request), allowed=frozenset({KeyKind.ADMIN}), header="Authorization"
    )


SdkAppDep = Annotated[str, Depends(sdk_app)]
ServerAppDep = Annotated[str, Depends(server_app)]
AdminAppDep = Annotated[str, Depends(admin_app)]
