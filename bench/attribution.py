"""Attribution: installs/s through the real ``attribution.matcher`` consumer with
1,000,000 clicks in the window (issue target ≥ 5,000 installs/s).

Its own Tansu broker and Postgres database: one app with 20 trackers (written as the admin
API writes them), then 1,000,000 clicks COPY'd into the clicks index
(``attribution_clicks``, the table the matcher fills from the ``clicks`` topic) over the
last 7 days: half with an advertising id, phone user agents over a few hundred thousand
IPs, 5 % impressions, 2 % bots; and 100,000 earlier installs COPY'd into the ledger
(``attribution_installs``), then ANALYZE — the state of a live database, whose planner
has statistics (on empty, never-analysed tables it picks the ``(app_id, status)`` index
for every ledger lookup and scans all of the app's installs each time). The ``installs``
topic is then filled with N installs in a fixed mix — the referrer names a click
(click_id), the advertising id of a click (adid), the IP and device of a click of the
last 24 h (fingerprint), or nothing known (organic) — shuffled.

The measured part is production's: ``Matcher`` driven by ``ConsumerRunner`` (group
``attribution.matcher``, the service's topics and settings, resources opened by
``open_resources``, on uvloop as under uvicorn), timed like kafka_kit from the first
batch reaching the runner to the commit of the batch holding the Nth install (the group
join is excluded; it is reported).
Afterwards the ``attributions`` topic is read back: every install must be there, and the
methods found are reported beside the planned mix. Tune with BENCH_ATTRIBUTION_INSTALLS,
BENCH_ATTRIBUTION_CLICKS and BENCH_ATTRIBUTION_LEDGER.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event

from bench._infra import (
    Database,
    TimedRunner,
    cpu_seconds,
    machine_busy_seconds,
    provision_trackers,
    read_topic,
)
from libs.runtime import localinfra
from libs.runtime.kafka import Producer, ensure_topics, platform_topics
from libs.runtime.resources import open_resources
from libs.runtime.service import tune_gc
from libs.runtime.settings import PlatformSettings
from libs.schemas import InstallReported, UserAttributed, decode
from services.attribution import logic
from services.attribution.consumer import TOPICS, Matcher
from services.tracker.logic import referrer_value

INSTALLS = int(os.environ.get("BENCH_ATTRIBUTION_INSTALLS", "10000"))
CLICKS = int(os.environ.get("BENCH_ATTRIBUTION_CLICKS", "1000000"))
LEDGER = int(os.environ.get("BENCH_ATTRIBUTION_LEDGER", "100000"))
TRACKERS = 20
TARGET_INSTALLS_PER_S = 5_000
RUN_TIMEOUT_S = 1_800.0
# The planned mix of installs, by the method that should attribute them.
MIX = {"click_id": 0.40, "adid": 0.25, "fingerprint": 0.15, "organic": 0.20}
# (click user agent, install platform, os_version, device_model): the SDK's fields name
# the same device the click's browser did, so the fingerprints agree.
DEVICES = [
    (
        "Mozilla/5.0 (Linux; Android 13; SM-A536E) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Mobile Safari/537.36",
        "android",
        "13",
        "SM-A536E",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/125.0.0.0 Mobile Safari/537.36",
        "android",
        "14",
        "SM-S918B",
    ),
    (
        "Mozilla/5.0 (Linux; Android 12; M2101K6G) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/123.0.0.0 Mobile Safari/537.36",
        "android",
        "12",
        "M2101K6G",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; 22111317G Build/TP1A.220624.014; wv) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.0.0 Mobile "
        "Safari/537.36 [FBAN/EMA;FBLC/fa_IR;FBAV/400.0.0.10.110;]",
        "android",
        "13",
        "22111317G",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
        "ios",
        "17.4.1",
        "iPhone14,5",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
        "ios",
        "16.6",
        "iPhone12,1",
    ),
]
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CLICK_PREFIXES = (5, 31, 37, 46, 78, 89, 91, 151, 185, 188)  # public IPv4 /8s
ORGANIC_PREFIX = 2  # no click comes from 2.0.0.0/8
ORGANIC_REFERRER = "utm_source=google-play&utm_medium=organic"
CLICK_COLUMNS = (
    "app_id",
    "click_id",
    "tracker_token",
    "ts",
    "ip",
    "adid",
    "is_bot",
    "expires_at",
    "user_agent",
    "fingerprint",
    "kind",
)
INSTALL_COLUMNS = (
    "app_id",
    "install_event_id",
    "device_id",
    "user_key",
    "install_ts",
    "ref_click_id",
    "attribution_id",
    "method",
    "kind",
    "status",
    "tracker_token",
    "click_id",
    "attributed_at",
    "adid",
)


def _adid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ip(rng: random.Random, prefix: int) -> str:
    bits = rng.getrandbits(24)
    return f"{prefix}.{bits >> 16}.{(bits >> 8) & 255}.{bits & 255}"


def click_rows(
    app_id: str, tokens: list[str], n: int, now: datetime, rng: random.Random
) -> list[tuple[Any, ...]]:
    """n clicks-index rows as the matcher's ``_click_row`` writes them, ts over the last
    7 days. The fingerprint is ``logic.fingerprint_key(logic.fingerprint(ip, ua))``, its
    device part computed once per user agent (it does not depend on the IP)."""
    devices = {
        ua: logic.fingerprint("1.1.1.1", ua).device  # type: ignore[union-attr]
        for ua in [d[0] for d in DEVICES] + [BOT_UA]
    }
    ips = [_ip(rng, rng.choice(CLICK_PREFIXES)) for _ in range(n // 3)]
    ids = os.urandom(16 * n).hex()
    span = int(logic.CLICK_WINDOW.total_seconds()) - 60
    rows = []
    for i in range(n):
        bot = rng.random() < 0.02
        ua = BOT_UA if bot else rng.choice(DEVICES)[0]
        ip = rng.choice(ips)
        ts = now - timedelta(seconds=60 + rng.random() * span)
        rows.append(
            (
                app_id,
                ids[32 * i : 32 * i + 32],
                rng.choice(tokens),
                ts,
                ip,
                _adid(rng) if rng.random() < 0.5 else None,
                bot,
                ts + logic.CLICK_WINDOW,
                ua,
                logic.fingerprint_key(logic.Fingerprint(ip, devices[ua])),
                "impression" if rng.random() < 0.05 else "click",
            )
        )
    return rows


def ledger_rows(
    app_id: str, tokens: list[str], n: int, now: datetime, rng: random.Random
) -> list[tuple[Any, ...]]:
    """n earlier installs of the app (30 to 120 days ago, 40 % attributed to a click long
    expired, 70 % with an advertising id): the ledger a live app has, which every new
    install's history is looked up in."""
    rows = []
    for _ in range(n):
        ts = now - timedelta(days=30 + rng.random() * 90)
        device = f"dev-{rng.getrandbits(64):016x}"
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        click_id = f"{rng.getrandbits(128):032x}" if rng.random() < 0.4 else None
        rows.append(
            (
                app_id,
                event_id,
                device,
                f"d:{device}",
                ts,
                click_id,
                logic.attribution_id(app_id, event_id, click_id),
                "click_id" if click_id else "organic",
                "new_user" if click_id else "organic",
                "attributed",
                rng.choice(tokens) if click_id else None,
                click_id,
                ts,
                _adid(rng) if rng.random() < 0.7 else None,
            )
        )
    return rows


def installs(
    app_id: str, clicks: list[tuple[Any, ...]], n: int, now: datetime, rng: random.Random
) -> tuple[list[InstallReported], dict[str, int]]:
    """n installs in the MIX (shuffled), each touching a different click, and the planned
    count of each method."""
    by_ua = {d[0]: d for d in DEVICES}
    human = [c for c in clicks if c[10] == "click" and not c[6]]
    rng.shuffle(human)
    recent = now - logic.FINGERPRINT_WINDOW + timedelta(minutes=5)
    half = len(human) // 2  # the referred clicks come from the other half: no click twice
    with_adid = (c for c in human[:half:2] if c[5] is not None)
    fingerprinted = (c for c in human[1:half:2] if c[5] is None and c[3] > recent)
    referred = iter(human[half:])
    planned = {m: round(n * share) for m, share in MIX.items()}
    planned["organic"] = n - sum(v for m, v in planned.items() if m != "organic")
    out = []
    for method, count in planned.items():
        for _ in range(count):
            fields: dict[str, Any] = {"adid": _adid(rng), "referrer": ORGANIC_REFERRER}
            device = rng.choice(DEVICES)
            ip = _ip(rng, ORGANIC_PREFIX)
            if method == "click_id":
                click = next(referred)
                device = by_ua[click[8]]
                fields["referrer"] = referrer_value(click[1], click[2])
                fields["adid"] = click[5] or _adid(rng)
            elif method == "adid":
                click = next(with_adid)
                device = by_ua[click[8]]
                fields["adid"] = click[5]
                fields["referrer"] = None  # the store lost it
            elif method == "fingerprint":
                click = next(fingerprinted)
                device = by_ua[click[8]]
                ip = click[4]
                fields["adid"] = None  # limited ad tracking
                fields["referrer"] = None
            _, platform, os_version, model = device
            out.append(
                InstallReported(
                    app_id=app_id,
                    event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    device_id=f"dev-{rng.getrandbits(64):016x}",
                    ts=now,
                    received_at=now,
                    platform=platform,
                    os_version=os_version,
                    device_model=model,
                    app_version="5.12.0",
                    locale="fa-IR",
                    ip=ip,
                    user_agent=f"Dalvik/2.1.0 (Linux; U; Android {os_version}; {model})"
                    if platform == "android"
                    else None,
                    **fields,
                )
            )
    rng.shuffle(out)
    return out, planned


async def fill(
    database_url: str, clicks: list[tuple[Any, ...]], ledger: list[tuple[Any, ...]]
) -> float:
    """COPY the clicks index and the ledger, then ANALYZE (as autovacuum would have done
    on a live database); returns seconds."""
    started = time.perf_counter()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table(
            "attribution_clicks", records=clicks, columns=CLICK_COLUMNS
        )
        await conn.copy_records_to_table(
            "attribution_installs", records=ledger, columns=INSTALL_COLUMNS
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def postgres_cpu_seconds(database_url: str) -> float:
    """CPU seconds used so far by the server processes of this database's connections."""
    conn = await asyncpg.connect(database_url)
    try:
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    total = 0.0
    for row in pids:
        try:
            total += cpu_seconds(row["pid"])
        except FileNotFoundError:
            continue  # the connection closed meanwhile
    return total


def run() -> dict[str, Any]:
    """On uvloop: the service's consumers run inside uvicorn, whose loop is uvloop."""
    import uvloop

    return uvloop.run(measure())


async def measure() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hodhod-bench-attribution-"))
    load_before = os.getloadavg()
    rng = random.Random(20261130)
    now = datetime.now(UTC).replace(microsecond=0)
    broker = await asyncio.to_thread(localinfra.Tansu.start, log_path=tmp / "tansu.log")
    database = await Database.create(tmp)
    try:
        await ensure_topics(broker.bootstrap, platform_topics(), partitions=3)
        app_id, tokens = await provision_trackers(database.url, count=TRACKERS)
        started = time.perf_counter()
        rows = click_rows(app_id, tokens, CLICKS, now, rng)
        ledger = ledger_rows(app_id, tokens, LEDGER, now, rng)
        built_s = time.perf_counter() - started
        copy_s = await fill(database.url, rows, ledger)
        del ledger
        print(
            f"  {CLICKS} clicks and {LEDGER} earlier installs built in {built_s:.1f} s, "
            f"copied in {copy_s:.1f} s",
            flush=True,
        )
        reports, planned = installs(app_id, rows, INSTALLS, now, rng)
        del rows
        producer = Producer(broker.bootstrap, client_id="bench-installs")
        await producer.start()
        try:
            for start in range(0, len(reports), 5_000):
                await producer.publish_all(reports[start : start + 5_000])
        finally:
            await producer.stop()
        del reports
        settings = PlatformSettings(
            kafka_bootstrap=broker.bootstrap, database_url=database.url, log_level="WARNING"
        )
        async with open_resources(
            settings, with_clickhouse=False, client_id="bench-attribution"
        ) as resources:
            runner = TimedRunner(
                target=INSTALLS,
                group="attribution.matcher",
                topics=TOPICS,
                handler=Matcher(resources.sessions, resources.producer),
                settings=settings,
                dlq_producer=resources.producer,
                per_partition=True,  # as the service runs it (services/attribution/service.py)
            )
            statements = Counter[str]()

            def count(query: Any) -> None:
                # Every statement, through SQLAlchemy or on its asyncpg connection (the
                # matcher's reads), but not the transaction control and pool pings
                # asyncpg logs too.
                verb = (query.query.split(None, 1) or [""])[0].upper()
                if verb not in {"BEGIN", "COMMIT", "ROLLBACK", ";"}:
                    statements.update(("sent",))

            event.listen(
                resources.engine.sync_engine,
                "connect",
                lambda connection, _: connection.driver_connection.add_query_logger(count),
            )
            tune_gc()  # as compose does for every service process
            joined = time.perf_counter()
            busy = machine_busy_seconds()
            times = os.times()
            await asyncio.wait_for(runner.run(), RUN_TIMEOUT_S)
            wall = time.perf_counter() - joined
            user = os.times().user - times.user
            cpu = user + os.times().system - times.system
            busy = machine_busy_seconds() - busy
            pg_cpu = await postgres_cpu_seconds(database.url)
        assert runner.started is not None and runner.finished is not None
        join_s = runner.started - joined
        seconds = runner.finished - runner.started
        values = await read_topic(broker.bootstrap, "attributions", expected=INSTALLS)
    finally:
        await database.drop()
        await asyncio.to_thread(broker.stop)
    attributed = [decode(UserAttributed, v) for v in values]
    found = Counter(a.method for a in attributed)
    kinds = Counter(a.kind for a in attributed)
    if len({a.install_event_id for a in attributed}) != INSTALLS:
        raise RuntimeError(f"{INSTALLS} installs but {len(attributed)} attributions published")
    rate = round(INSTALLS / seconds)
    return {
        "parameters": {
            "installs": INSTALLS,
            "clicks_in_index": CLICKS,
            "earlier_installs_in_ledger": LEDGER,
            "click_ts_spread": "last 7 days, uniform",
            "clicks_with_adid": "50 %",
            "impressions": "5 %",
            "bots": "2 %",
            "trackers": TRACKERS,
            "planned_mix": planned,
            "consumer": "attribution.matcher: Matcher + ConsumerRunner, one process",
            "kafka_max_batch": settings.kafka_max_batch,
            "database_pool_size": settings.database_pool_size,
            "partitions": 3,
            "broker": "Tansu, same host",
            "load_average_before": [round(x, 2) for x in load_before],
        },
        "figures": {
            "installs_per_s": rate,
            "seconds": round(seconds, 2),
            "group_join_seconds": round(join_s, 1),
            "consumer_cpu_share": round(cpu / wall, 2),
            "postgres_cpu_share": round(pg_cpu / wall, 2),
            "other_cpu_share": round(max(busy - cpu - pg_cpu, 0.0) / wall, 2),
            "consumer_cpu_ms_per_install": round(cpu / INSTALLS * 1000, 3),
            "consumer_kernel_share_of_cpu": round(1 - user / cpu, 2),
            "postgres_cpu_ms_per_install": round(pg_cpu / INSTALLS * 1000, 3),
            "fill_build_seconds": round(built_s, 1),
            "fill_copy_analyze_seconds": round(copy_s, 1),
            "sql_statements_per_install": round(statements["sent"] / INSTALLS, 2),
            "attributions_published": len(attributed),
            **{f"attributed_by_{m}": found.get(m, 0) for m in [*MIX, "view_through"]},
            "kinds": dict(sorted(kinds.items())),
        },
        "targets": [
            {
                "name": "installs_per_s",
                "value": rate,
                "minimum": TARGET_INSTALLS_PER_S,
                "met": rate >= TARGET_INSTALLS_PER_S,
            }
        ],
        "samples": [rate],
    }
