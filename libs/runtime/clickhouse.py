"""ClickHouse: a client factory for ``chdb://PATH`` and ``http(s)://`` URLs, an async
facade, and a forward-only SQL-file migration runner.

chDB is ClickHouse in this process: one engine path per process (file-locked against
other processes), safe to share between threads. Calls are blocking, so the async
facade runs them in worker threads.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver import exceptions as ch_exc
from clickhouse_connect.driver.client import Client

from libs.runtime.errors import register_transient

MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@register_transient
def _transient(exc: BaseException) -> bool | None:
    """clickhouse-connect: the server could not be reached or a stream broke off
    (``OperationalError``, of which ``StreamFailureError`` is one). Its other errors — a
    bad query, a refused value — are no verdict: their cause decides."""
    if isinstance(exc, ch_exc.OperationalError):
        return True
    return None


def chdb_path(url: str) -> str | None:
    """The filesystem path of a ``chdb://`` URL (relative paths allowed), else None."""
    if not url.startswith("chdb://"):
        return None
    rest = url[len("chdb://") :]
    return rest.split("?", 1)[0] or ":memory:"


def get_client(url: str, database: str | None = None) -> Client:
    """A blocking clickhouse-connect client. ``chdb://./var/ch`` or ``http://host:8123``.

    For chDB the data directory is created if missing. Raises whatever the driver
    raises when the server cannot be reached.
    """
    path = chdb_path(url)
    if path is not None:
        if path != ":memory:":
            Path(path).mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(interface="chdb", path=path, database=database)
    parts = urlsplit(url)
    return clickhouse_connect.get_client(
        dsn=url, database=database or parts.path.strip("/") or None
    )


class AsyncClickHouse:
    """The blocking client behind ``asyncio.to_thread``; one instance per process is enough.

    ``connect`` opens another client on the same server; :meth:`stream_rows` uses one per
    stream, because a chDB client is locked for as long as a stream of it is open.
    """

    def __init__(
        self, client: Client, database: str, connect: Callable[[], Client] | None = None
    ) -> None:
        self.client = client
        self.database = database
        self._connect = connect

    async def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self.client.command, sql, parameters=parameters)

    async def query_rows(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            result = self.client.query(sql, parameters=parameters)
            names = result.column_names
            return [
                {name: _utc(value) for name, value in zip(names, row, strict=True)}
                for row in result.result_rows
            ]

        return await asyncio.to_thread(run)

    async def stream_rows(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The rows of ``sql`` block by block (the server's blocks, up to ``max_block_size``
        rows), each block read only when the caller asks for it: memory holds one block.

        The query runs when the first block is asked for, so errors surface there. The
        stream reads on a client of its own (from ``connect``; the shared one without it)
        and on one thread of its own, so an open stream never blocks other queries; the
        caller must exhaust the iterator or ``aclose()`` it to release both.
        """
        loop = asyncio.get_running_loop()
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-stream")
        client: Client | None = None
        stream: Any = None

        def open_stream() -> Any:
            nonlocal client
            client = self._connect() if self._connect is not None else self.client
            context = client.query_row_block_stream(sql, parameters=parameters)
            return context.__enter__()  # type: ignore[no-untyped-call]  # (untyped upstream)

        def close() -> None:
            try:
                if stream is not None:
                    stream.__exit__(None, None, None)
            finally:
                if client is not None and client is not self.client:
                    client.close()

        try:
            stream = await loop.run_in_executor(thread, open_stream)
            names = stream.source.column_names
            while True:
                # next() with a default: a StopIteration cannot cross a future.
                block = await loop.run_in_executor(thread, next, stream, None)
                if block is None:
                    return
                yield [
                    {name: _utc(value) for name, value in zip(names, row, strict=True)}
                    for row in block
                ]
        finally:
            try:
                # Shielded: a cancelled download still closes its stream and client.
                await asyncio.shield(loop.run_in_executor(thread, close))
            finally:
                thread.shutdown(wait=False)

    async def insert(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        if not rows:
            return
        await asyncio.to_thread(
            self.client.insert,
            table,
            rows,
            column_names=list(column_names),
            database=self.database,
            # A backfill batch may span more months than the default limit of 100.
            settings={"max_partitions_per_insert_block": 0},
        )

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self.command("SELECT 1"), 5)
        except Exception:  # readiness answers false rather than raise
            return False
        return True

    def close(self) -> None:
        self.client.close()


def _utc(value: Any) -> Any:
    # chDB drops the zone of DateTime64('UTC') columns; every stored time is UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def statements(self) -> list[str]:
        text = "\n".join(
            line for line in self.path.read_text().splitlines() if not line.strip().startswith("--")
        )
        return [s.strip() for s in text.split(";") if s.strip()]


def discover(directory: Path) -> list[Migration]:
    """The ``NNNN_slug.sql`` files of ``directory`` in order. Duplicate numbers raise."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if not match:
            raise ValueError(f"{path.name}: ClickHouse migrations are named NNNN_slug.sql")
        version = int(match.group(1))
        if version in found:
            raise ValueError(
                f"duplicate ClickHouse migration number {version:04d}: "
                f"{found[version].path.name} and {path.name}"
            )
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


def migrate(client: Client, directory: Path, database: str) -> list[int]:
    """Apply the migrations not yet recorded in ``{database}.schema_migrations``.

    Blocking; idempotent; returns the versions applied. ``{db}`` in the SQL files is
    replaced by the database name, so tests and tenants of a shared server can differ.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise ValueError(f"invalid ClickHouse database name {database!r}")
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
    applied = {
        row[0]
        for row in client.query(f"SELECT version FROM {database}.schema_migrations").result_rows
    }
    done: list[int] = []
    for migration in discover(directory):
        if migration.version in applied:
            continue
        for statement in migration.statements:
            client.command(statement.replace("{db}", database))
        client.insert(
            f"{database}.schema_migrations",
            [[migration.version, migration.name]],
            column_names=["version", "name"],
        )
        done.append(migration.version)
    return done
