"""The warehouse writer into chDB: rows/s for ``events`` (issue 4 target ≥ 100,000).

Builds N decoded ``Event`` records (the contract's richest example, distinct ids spread
over 90 days), then times ``WarehouseWriter`` on batches of 50,000 — what the
``ingest.warehouse`` BatchPolicy hands it. Kafka is left out: the consumer side is
measured by kafka_kit. Repeated, median reported. Tune with BENCH_WAREHOUSE_N.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from libs.runtime.clickhouse import AsyncClickHouse, get_client, migrate
from libs.runtime.pipeline import Batch, Record
from libs.runtime.service import tune_gc
from libs.schemas import Event
from libs.schemas.events import EXAMPLES
from services.ingest.warehouse import MIGRATIONS, WarehouseWriter

N = int(os.environ.get("BENCH_WAREHOUSE_N", "200000"))
BATCH = 50_000
REPEATS = 3
TARGET_ROWS_PER_S = 100_000


def records(n: int, run: int) -> list[Record]:
    base = datetime(2026, 9, 1, tzinfo=UTC)
    example = dict(EXAMPLES[0])
    out = []
    for i in range(n):
        event = Event.model_validate(
            {
                **example,
                "event_id": f"e{run}_{i}",
                "device_id": f"d{i % 20_000}",
                "ts": (base + timedelta(minutes=i % (90 * 1440))).isoformat(),
            }
        )
        out.append(Record("events", i % 3, i, None, event, 0))
    return out


async def run() -> dict[str, Any]:
    tune_gc()
    path = Path(tempfile.mkdtemp(prefix="hodhod-bench-ch-"))
    client = get_client(f"chdb://{path}")
    try:
        migrate(client, MIGRATIONS, "hodhod")
        writer = WarehouseWriter(AsyncClickHouse(client, "hodhod"))
        rates = []
        for run_no in range(REPEATS):
            batch_records = records(N, run_no)
            started = time.perf_counter()
            for start in range(0, N, BATCH):
                await writer(Batch(records=batch_records[start : start + BATCH]))
            rates.append(N / (time.perf_counter() - started))
            print(f"  warehouse rep {run_no}: {round(rates[-1])} rows/s", flush=True)
        stored = client.query("SELECT count() FROM hodhod.events").result_rows[0][0]
    finally:
        client.close()
        shutil.rmtree(path, ignore_errors=True)
    rate = round(statistics.median(rates))
    return {
        "parameters": {
            "rows": N,
            "batch_rows": BATCH,
            "repeats": REPEATS,
            "table": "events",
            "engine": "chDB (in process), ReplacingMergeTree",
        },
        "figures": {"warehouse_events_rows_per_s": rate, "rows_stored": stored},
        "targets": [
            {
                "name": "warehouse_events_rows_per_s",
                "value": rate,
                "minimum": TARGET_ROWS_PER_S,
                "met": rate >= TARGET_ROWS_PER_S,
            }
        ],
        "samples": [round(r) for r in rates],
    }
