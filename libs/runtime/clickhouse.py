"""ClickHouse: a client factory for ``chdb://PATH`` and ``http(s)://`` URLs, an async
facade, and a forward-only SQL-file migration runner.

chDB is ClickHouse in this process: one engine path per process (file-locked against
other processes), safe to share between threads. Calls are blocking, so the async
facade runs them in worker threads.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


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
    """The blocking client behind ``asyncio.to_thread``; one instance per process is enough."""

    def __init__(self, client: Client, database: str) -> None:
        self.client = client
        self.database = database

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
