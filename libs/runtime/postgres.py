"""Postgres: the declarative base, engine and session factories, and the migration runner.

Every table of every service derives from ``Base`` so that one Alembic history covers
them all. Repository functions take an ``AsyncSession`` and never commit: the caller
(an HTTP dependency or a consumer handler) owns the transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy import MetaData, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import DateTime

from libs.runtime.errors import TransientError, register_poison, register_transient

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations" / "postgres"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


def async_url(url: str) -> str:
    """Turn ``postgresql://`` (libpq style, as in DATABASE_URL) into the asyncpg dialect URL."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}:
        scheme = "postgresql+asyncpg"
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> bool:
    """True when a connection answers ``SELECT 1`` within 5 s (readiness)."""
    try:
        async with asyncio.timeout(5), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # readiness answers false rather than raise
        return False
    return True


# SQLSTATE classes retrying cures: 08 connection exception, 40001 serialization failure,
# 40P01 deadlock, 53 insufficient resources, 57P operator intervention (a server shutting
# down or starting). And those of a refused value: 22 data exception, 23 integrity.
_TRANSIENT_STATES = ("08", "40001", "40P01", "53", "57P")
_POISON_STATES = ("22", "23")


def _sqlstate(error: Any) -> str:
    """The SQLSTATE of an asyncpg error, or of the DBAPI error SQLAlchemy wraps."""
    return str(getattr(error, "sqlstate", "") or getattr(error, "pgcode", "") or "")


@register_transient
def _transient(exc: BaseException) -> bool | None:
    """asyncpg and SQLAlchemy: a lost or refused connection, a server going away, a
    serialization failure or deadlock (the transaction can be run again)."""
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    if isinstance(exc, sa_exc.TimeoutError):
        return True  # the pool had no free connection in time
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or _sqlstate(exc.orig).startswith(_TRANSIENT_STATES)
    if isinstance(exc, asyncpg.PostgresError):
        return _sqlstate(exc).startswith(_TRANSIENT_STATES)
    if isinstance(exc, asyncpg.InterfaceError):
        # Client-side: the connection is closed or broke (SQLAlchemy's InterfaceError).
        return True
    return None


@register_poison
def _poison(exc: BaseException) -> bool | None:
    """The store refused a value of the record (SQLSTATE classes 22 and 23)."""
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    error = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if isinstance(error, asyncpg.PostgresError) or isinstance(exc, sa_exc.DBAPIError):
        return True if _sqlstate(error).startswith(_POISON_STATES) else None
    return None


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    config.attributes["database_url"] = async_url(url)
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Apply the Alembic history up to ``revision``. Blocking; idempotent.

    Safe beside running services: Alembic takes the version row lock, and every
    migration is written to be additive while services run.
    """
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def migrate_async(url: str, revision: str = "head") -> None:
    """``migrate`` in a worker thread (Alembic's env runs its own event loop)."""
    await asyncio.to_thread(migrate, url, revision)


async def lock(session: AsyncSession, *parts: str) -> None:
    """Take a transaction-scoped advisory lock on the key ``parts`` (blocks until free).

    For serialising writers of a row that may not exist yet, where ``SELECT … FOR UPDATE``
    locks nothing: two replicas creating the same profile, or an install and its click
    arriving on different partitions. Released at commit or rollback.
    """
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": "\x1f".join(parts)},
    )


async def accepts_connections(url: str) -> bool:
    """True when the server at ``url`` (a ``postgresql://`` URL) accepts a connection:
    up, and no password asked for."""
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def fetch_raw(session: AsyncSession, query: str, *args: Any) -> list[Any]:
    """The rows (asyncpg records) of ``query`` (``$n`` parameters) run on the session's own
    connection, in its transaction, without SQLAlchemy's statement and row machinery —
    for hot paths where that machinery is a real share of the CPU (the attribution
    matcher's reads, the segmenter's real-time statements). asyncpg prepares and caches
    the statement; its server errors are classified like SQLAlchemy's
    (``errors.is_transient``, ``is_poison`` read their SQLSTATE)."""
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None  # a checked-out connection
    if not driver.is_in_transaction():
        # SQLAlchemy issues BEGIN with its first statement: this one must not run before.
        await connection.exec_driver_sql("SELECT 1")
    try:
        rows: list[Any] = await driver.fetch(query, *args)
    except asyncpg.InterfaceError as exc:
        # Client-side (a closed connection): through SQLAlchemy an InterfaceError, which
        # the runner retries; so here.
        raise TransientError(f"postgres: {exc}") from exc
    return rows


# A set-returning function scan yields the array in order: the locks are taken in it.
_LOCK_ALL = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
    "FROM unnest(CAST(:keys AS text[])) AS k"
)


async def lock_all(session: AsyncSession, keys: Sequence[Sequence[str]]) -> None:
    """``lock`` on every key, one after another in the order given, in one statement (the
    same locks ``lock`` takes for the same parts). Callers pass a global order — sorted
    keys — so two transactions locking overlapping sets queue instead of deadlocking.
    Blocks until all are held; re-entrant within a transaction."""
    if keys:
        await session.execute(_LOCK_ALL, {"keys": ["\x1f".join(parts) for parts in keys]})


@asynccontextmanager
async def _server_connection(url: str) -> AsyncIterator[tuple[Any, str]]:
    """A raw asyncpg connection to the server's ``postgres`` database, and the name of
    the database ``url`` points at."""
    import asyncpg

    parts = urlsplit(async_url(url))
    name = parts.path.lstrip("/")
    if not name or '"' in name:
        raise ValueError(f"invalid database name {name!r}")
    conn = await asyncpg.connect(
        urlunsplit(("postgresql", parts.netloc, "/postgres", parts.query, ""))
    )
    try:
        yield conn, name
    finally:
        await conn.close()


async def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist (local modes, tests)."""
    async with _server_connection(url) as (conn, name):
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')


async def drop_database(url: str) -> None:
    """Drop the database named in ``url``, closing its connections (tests)."""
    async with _server_connection(url) as (conn, name):
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
