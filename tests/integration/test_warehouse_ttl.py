"""The raw tables' TTL follows HODHOD_CLICKHOUSE_TTL_DAYS (in a database of its own)."""

from __future__ import annotations

import pytest

from libs.runtime.clickhouse import get_client, migrate
from services.ingest.warehouse import MIGRATIONS, TTL_COLUMNS, apply_ttl

pytestmark = pytest.mark.integration


def test_ttl_is_set_changed_and_removed(clickhouse_url: str) -> None:
    client = get_client(clickhouse_url)
    db = "hodhod_ttl_test"
    try:
        migrate(client, MIGRATIONS, db)

        def ddl(table: str) -> str:
            return str(client.command(f"SHOW CREATE TABLE {db}.{table}"))

        apply_ttl(client, db, 30)
        for table, column in TTL_COLUMNS.items():
            assert f"TTL toDateTime({column}) + toIntervalDay(30)" in ddl(table), table
        apply_ttl(client, db, 400)
        assert "toIntervalDay(400)" in ddl("events")
        apply_ttl(client, db, 0)
        apply_ttl(client, db, 0)  # idempotent
        assert all(" TTL " not in ddl(t) for t in TTL_COLUMNS)
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")
        client.close()
