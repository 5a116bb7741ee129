"""The warehouse writer: every topic into its ClickHouse table, in batches.

Rows carry ``_partition`` and ``_offset``; tables are ReplacingMergeTree on the natural
id, so a replayed batch (a crash between insert and commit) collapses into the same
rows. Offsets are committed by the runner only after ``insert`` returned.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from libs.runtime.clickhouse import AsyncClickHouse
from libs.runtime.pipeline import Batch, Record
from libs.schemas import (
    ClickRecorded,
    ConfigChanged,
    DeliveryReceipt,
    Event,
    InstallReported,
    SegmentChanged,
    SendJob,
    UserAttributed,
    UserVerified,
    encode,
)
from libs.schemas.config_changes import is_user_erasure
from services.ingest.erasure import erase_user, erasure_causes
from services.ingest.metrics import WAREHOUSE_ERASURES, WAREHOUSE_ROWS

MIGRATIONS = Path(__file__).with_name("clickhouse")
POSITION = ("_partition", "_offset")


def _event(e: Event) -> list[Any]:
    return [
        e.app_id,
        e.event_id,
        e.name,
        e.user_key,
        e.device_id,
        e.user_id,
        e.ts,
        e.received_at,
        e.source,
        e.platform,
        e.app_version,
        e.timezone,
        e.session_id,
        orjson.dumps(e.props).decode(),
        e.revenue,
        e.currency,
    ]


def _click(c: ClickRecorded) -> list[Any]:
    return [
        c.app_id,
        c.click_id,
        c.tracker_token,
        c.ts,
        c.ip,
        c.user_agent,
        c.adid,
        c.is_bot,
        c.kind,
        encode(c).decode(),
    ]


def _install(i: InstallReported) -> list[Any]:
    return [i.app_id, i.event_id, i.device_id, i.ts, i.platform, i.referrer, encode(i).decode()]


def _verification(v: UserVerified) -> list[Any]:
    return [v.app_id, v.verification_id, v.user_id, v.ts, encode(v).decode()]


def _attribution(a: UserAttributed) -> list[Any]:
    return [
        a.app_id,
        a.attribution_id,
        a.user_key,
        a.device_id,
        a.install_ts,
        a.attributed_at,
        a.method,
        a.kind,
        a.status,
        a.tracker_token,
        a.click_id,
        encode(a).decode(),
    ]


def _segment_change(s: SegmentChanged) -> list[Any]:
    return [s.app_id, s.change_id, s.user_key, s.segment_id, s.change, s.ts]


def _send_job(j: SendJob) -> list[Any]:
    return [
        j.app_id,
        j.job_id,
        j.user_key,
        j.channel,
        j.transactional,
        j.journey_id,
        j.created_at,
        encode(j).decode(),
    ]


def _delivery(d: DeliveryReceipt) -> list[Any]:
    return [
        d.app_id,
        d.receipt_id,
        d.job_id,
        d.user_key,
        d.channel,
        d.status,
        d.provider,
        d.provider_message_id,
        d.error,
        d.journey_id,
        d.ts,
    ]


def _config_change(c: ConfigChanged) -> list[Any]:
    return [c.app_id, c.change_id, c.entity, c.entity_id, c.action, c.ts]


# topic -> (table, columns, row builder)
TABLES: dict[str, tuple[str, tuple[str, ...], Callable[[Any], list[Any]]]] = {
    "events": (
        "events",
        (
            "app_id",
            "event_id",
            "name",
            "user_key",
            "device_id",
            "user_id",
            "ts",
            "received_at",
            "source",
            "platform",
            "app_version",
            "timezone",
            "session_id",
            "props",
            "revenue",
            "currency",
        ),
        _event,
    ),
    "clicks": (
        "clicks",
        (
            "app_id",
            "click_id",
            "tracker_token",
            "ts",
            "ip",
            "user_agent",
            "adid",
            "is_bot",
            "kind",
            "payload",
        ),
        _click,
    ),
    "installs": (
        "installs",
        ("app_id", "event_id", "device_id", "ts", "platform", "referrer", "payload"),
        _install,
    ),
    "verifications": (
        "verifications",
        ("app_id", "verification_id", "user_id", "ts", "payload"),
        _verification,
    ),
    "attributions": (
        "attributions",
        (
            "app_id",
            "attribution_id",
            "user_key",
            "device_id",
            "install_ts",
            "attributed_at",
            "method",
            "kind",
            "status",
            "tracker_token",
            "click_id",
            "payload",
        ),
        _attribution,
    ),
    "segment-changes": (
        "segment_changes",
        ("app_id", "change_id", "user_key", "segment_id", "change", "ts"),
        _segment_change,
    ),
    "send-jobs": (
        "send_jobs",
        (
            "app_id",
            "job_id",
            "user_key",
            "channel",
            "transactional",
            "journey_id",
            "created_at",
            "payload",
        ),
        _send_job,
    ),
    "deliveries": (
        "deliveries",
        (
            "app_id",
            "receipt_id",
            "job_id",
            "user_key",
            "channel",
            "status",
            "provider",
            "provider_message_id",
            "error",
            "journey_id",
            "ts",
        ),
        _delivery,
    ),
    "config-changes": (
        "config_changes",
        ("app_id", "change_id", "entity", "entity_id", "action", "ts"),
        _config_change,
    ),
}


# The time each raw table's TTL counts from.
TTL_COLUMNS = {
    "events": "ts",
    "clicks": "ts",
    "installs": "ts",
    "verifications": "ts",
    "attributions": "attributed_at",
    "segment_changes": "ts",
    "send_jobs": "created_at",
    "deliveries": "ts",
    "config_changes": "ts",
}


def apply_ttl(client: Any, database: str, days: int) -> None:
    """Set (or with 0, remove) the retention TTL of every raw table. Blocking; idempotent;
    run by ``hodhod migrate`` and at start, after the migrations."""
    for table, column in TTL_COLUMNS.items():
        if days > 0:
            client.command(
                f"ALTER TABLE {database}.{table} MODIFY TTL toDateTime({column}) "
                f"+ INTERVAL {int(days)} DAY"
            )
        else:
            has_ttl = client.command(
                f"SELECT count() FROM system.tables WHERE database = '{database}' "
                f"AND name = '{table}' AND create_table_query LIKE '% TTL %'"
            )
            if int(has_ttl):
                client.command(f"ALTER TABLE {database}.{table} REMOVE TTL")


def rows_by_table(records: Sequence[Record]) -> dict[str, tuple[tuple[str, ...], list[list[Any]]]]:
    """Group a batch into ``table -> (columns, rows)``. Pure."""
    grouped: dict[str, list[list[Any]]] = defaultdict(list)
    columns: dict[str, tuple[str, ...]] = {}
    for record in records:
        table, cols, build = TABLES[record.topic]
        columns[table] = (*cols, *POSITION)
        grouped[table].append([*build(record.value), record.partition, record.offset])
    return {table: (columns[table], rows) for table, rows in grouped.items()}


class WarehouseWriter:
    """The handler of the ``ingest.warehouse`` consumer group. Blocks on ClickHouse;
    raises the driver's errors (the runner retries transient ones).

    After a batch's inserts, it erases the users whose erasure the batch carries
    (``erasure.py``): last, so that the user's rows of the same batch go too."""

    def __init__(self, clickhouse: AsyncClickHouse) -> None:
        self._ch = clickhouse

    async def __call__(self, batch: Batch) -> None:
        erasures = [
            r.value
            for r in batch.records
            if isinstance(r.value, ConfigChanged) and is_user_erasure(r.value)
        ]
        records = await self._without_erasure_exits(batch.records, erasures)
        for table, (columns, rows) in rows_by_table(records).items():
            await self._ch.insert(table, rows, columns)
            WAREHOUSE_ROWS.labels(table).inc(len(rows))
        for erasure in erasures:
            await erase_user(self._ch, app_id=erasure.app_id, user_key=erasure.entity_id)
            WAREHOUSE_ERASURES.inc()

    async def _without_erasure_exits(
        self, records: Sequence[Record], erasures: Sequence[ConfigChanged]
    ) -> Sequence[Record]:
        """``records`` but the segment exits an erasure caused (the segmenter announces
        them; storing them would bring the erased user's key back)."""
        exits = [
            r.value
            for r in records
            if isinstance(r.value, SegmentChanged)
            and r.value.change == "exited"
            and r.value.cause_event_id is not None
        ]
        if not exits:
            return records
        causes = {e.change_id for e in erasures} | await erasure_causes(
            self._ch,
            app_ids=[e.app_id for e in exits],
            ids=[e.cause_event_id for e in exits if e.cause_event_id is not None],
        )
        return [
            r
            for r in records
            if not (isinstance(r.value, SegmentChanged) and r.value.cause_event_id in causes)
        ]
