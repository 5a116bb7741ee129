"""The ClickHouse schema after migrations matches the committed snapshot, and the
migration runner is idempotent and strict about file names.

To accept an intended schema change, rerun with ``HODHOD_UPDATE_SNAPSHOTS=1`` and
commit ``tests/integration/snapshots/clickhouse_schema.sql``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from libs.runtime.clickhouse import discover, get_client, migrate
from services.ingest.warehouse import MIGRATIONS

pytestmark = pytest.mark.integration

DATABASE = "hodhod"
SNAPSHOT = Path(__file__).with_name("snapshots") / "clickhouse_schema.sql"


def normalise(ddl: str) -> str:
    """Lines stripped, blank lines dropped, runs of spaces collapsed: indentation is
    not schema, but one column per line keeps snapshot diffs readable."""
    lines = (re.sub(r"\s+", " ", line).strip() for line in ddl.splitlines())
    return "\n".join(line for line in lines if line) + ";"


def dump_schema(clickhouse_url: str) -> str:
    client = get_client(clickhouse_url)
    tables = [
        row[0]
        for row in client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name",
            parameters={"db": DATABASE},
        ).result_rows
    ]
    statements = [
        normalise(client.query(f"SHOW CREATE TABLE {DATABASE}.`{table}`").result_rows[0][0])
        for table in tables
    ]
    return "\n\n".join(statements) + "\n"


def test_schema_matches_the_committed_snapshot(clickhouse_url: str) -> None:
    schema = dump_schema(clickhouse_url)
    assert "CREATE TABLE" in schema
    if os.environ.get("HODHOD_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(schema)
        return
    assert SNAPSHOT.exists(), f"no snapshot; run with HODHOD_UPDATE_SNAPSHOTS=1 to write {SNAPSHOT}"
    committed = SNAPSHOT.read_text().splitlines()
    # Line by line, so a failure names the table that changed.
    assert schema.splitlines() == committed, (
        "the ClickHouse schema differs from the snapshot; if intended, rerun with "
        "HODHOD_UPDATE_SNAPSHOTS=1 and commit the snapshot"
    )


def test_every_migration_is_recorded(clickhouse_url: str) -> None:
    client = get_client(clickhouse_url)
    recorded = [
        (row[0], row[1])
        for row in client.query(
            f"SELECT version, name FROM {DATABASE}.schema_migrations ORDER BY version"
        ).result_rows
    ]
    assert recorded == [(m.version, m.name) for m in discover(MIGRATIONS)]


def test_migrating_again_applies_nothing(clickhouse_url: str) -> None:
    before = dump_schema(clickhouse_url)
    client = get_client(clickhouse_url)
    assert migrate(client, MIGRATIONS, DATABASE) == []
    assert migrate(client, MIGRATIONS, DATABASE) == []
    assert dump_schema(clickhouse_url) == before


def test_migrate_refuses_a_bad_database_name(clickhouse_url: str) -> None:
    with pytest.raises(ValueError, match="invalid ClickHouse database name"):
        migrate(get_client(clickhouse_url), MIGRATIONS, "hodhod; DROP DATABASE hodhod")


def test_discover_orders_by_number(tmp_path: Path) -> None:
    (tmp_path / "0010_later.sql").write_text("SELECT 1;")
    (tmp_path / "0002_first.sql").write_text("-- a comment\nSELECT 1;\n\nSELECT 2;")
    (tmp_path / "notes.txt").write_text("not a migration")
    found = discover(tmp_path)
    assert [(m.version, m.name) for m in found] == [(2, "first"), (10, "later")]
    assert found[0].statements == ["SELECT 1", "SELECT 2"]


def test_discover_rejects_duplicate_numbers(tmp_path: Path) -> None:
    (tmp_path / "0001_events.sql").write_text("SELECT 1;")
    (tmp_path / "0001_clicks.sql").write_text("SELECT 2;")
    with pytest.raises(ValueError, match="duplicate ClickHouse migration number 0001"):
        discover(tmp_path)


@pytest.mark.parametrize(
    "name",
    ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "00001_long.sql", "0001_.sql", "abcd_x.sql"],
)
def test_discover_rejects_badly_named_files(tmp_path: Path, name: str) -> None:
    (tmp_path / "0001_good.sql").write_text("SELECT 1;")
    (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(ValueError, match=r"NNNN_slug\.sql"):
        discover(tmp_path)
