"""Tracker: clicks/s on ``GET /c/{token}`` over keep-alive connections to one uvicorn
worker (issue target ≥ 5,000 clicks/s with p99 redirect latency < 10 ms).

The tracker service runs alone in a child process (``bench._http_server tracker``) against
a private Tansu broker and its own Postgres database holding one app and one tracker,
written as the admin API writes them. The load generator is a second child process
(uvloop, asyncio streams, CONNECTIONS keep-alive HTTP/1.1 connections, one request in
flight on each): every request carries a phone User-Agent and an advertising id, and must
be answered 302. Latency is per request, from writing it to having read the whole
answer. Two loads, REPEATS times each: a closed loop (as fast as the connections go: the
throughput and its latency) and a paced one at min(target, half the best closed-loop
rate), where a request held up by a late answer is timed from when it was due. The CPU
each process used, and what the machine's other users took meanwhile, are reported.

Afterwards every click is read back from the ``clicks`` topic and decoded: the benchmark
fails unless each 302 answered has its ClickRecorded there (the redirect never waits for
Kafka, so a click could be lost silently). Tune with BENCH_TRACKER_CLICKS (per
closed-loop repetition; paced ones send half), BENCH_TRACKER_CONNECTIONS and
BENCH_TRACKER_REPEATS.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench._infra import (
    Database,
    HttpServer,
    cpu_seconds,
    machine_busy_seconds,
    provision_trackers,
    read_topic,
    serve_http,
)
from libs.runtime import localinfra
from libs.runtime.kafka import ensure_topics, platform_topics
from libs.schemas import ClickRecorded, decode

CLICKS = int(os.environ.get("BENCH_TRACKER_CLICKS", "30000"))
CONNECTIONS = int(os.environ.get("BENCH_TRACKER_CONNECTIONS", "16"))
REPEATS = int(os.environ.get("BENCH_TRACKER_REPEATS", "3"))
WARM_UP = 500
PACE_FRACTION = 0.5
TARGET_CLICKS_PER_S = 5_000
TARGET_P99_MS = 10.0
PHONE_UA = (
    "Mozilla/5.0 (Linux; Android 13; SM-A536E) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
STORE_URL = "https://play.google.com/store/apps/details?id=com.example"


def requests(token: str, variants: int = 1024) -> list[bytes]:
    """Pre-built ``GET /c/{token}?adid=…`` requests (distinct advertising ids)."""
    return [
        (
            f"GET /c/{token}?adid={uuid.uuid4()} HTTP/1.1\r\nHost: bench\r\n"
            f"User-Agent: {PHONE_UA}\r\nAccept-Language: fa-IR,fa;q=0.9,en;q=0.8\r\n\r\n"
        ).encode()
        for _ in range(variants)
    ]


# --- the load generator (runs in its own process) -------------------------------------


def drive(
    port: int, token: str, clicks: int, connections: int, rate: float | None = None
) -> dict[str, Any]:
    """Send ``clicks`` requests over ``connections`` keep-alive connections; blocking.

    Closed loop (``rate`` None): each connection sends its next request as soon as the
    last answer is read. Paced: the connections together send ``rate`` requests/s on a
    fixed schedule; a request sent late because the previous answer came late is timed
    from when it was due (no coordinated omission). Returns wall seconds, this process's
    CPU seconds and every latency (ms). Raises RuntimeError on any answer but a 302."""
    import uvloop

    return uvloop.run(_drive(port, requests(token), clicks, connections, rate))


async def _drive(
    port: int, payloads: list[bytes], clicks: int, connections: int, rate: float | None
) -> dict[str, Any]:
    latencies: list[float] = []
    record = latencies.append
    clock = time.perf_counter
    share = [clicks // connections + (c < clicks % connections) for c in range(connections)]
    interval = connections / rate if rate else 0.0

    async def connection(c: int, begin: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            due = begin + c * interval / connections
            for i in range(share[c]):
                started = clock()
                if interval:
                    if started < due:
                        await asyncio.sleep(due - started)
                        started = clock()
                    else:
                        started = due  # held up by the previous answer
                    due += interval
                writer.write(payloads[(c * 61 + i) % len(payloads)])
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 302 "):
                    raise RuntimeError(f"the tracker answered {head[:200]!r}")
                at = head.find(b"\r\ncontent-length: ")
                if at >= 0:
                    length = int(head[at + 18 : head.index(b"\r\n", at + 2)])
                    if length:
                        await reader.readexactly(length)
                record((clock() - started) * 1000)
        finally:
            writer.close()

    cpu = time.process_time()
    begin = clock()
    await asyncio.gather(*(connection(c, begin) for c in range(connections)))
    return {
        "seconds": clock() - begin,
        "cpu_seconds": time.process_time() - cpu,
        "latencies_ms": latencies,
    }


# --- orchestration ---------------------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def check_redirect(port: int, token: str) -> str:
    """One click the way a phone makes it: a 302 to the store URL with the referrer."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        answer = await client.get(f"/c/{token}", headers={"User-Agent": PHONE_UA})
    location = answer.headers.get("location", "")
    if answer.status_code != 302 or not location.startswith(STORE_URL + "&referrer=click_id"):
        raise RuntimeError(f"unexpected redirect: {answer.status_code} {location!r}")
    return location


async def measure(
    client: ProcessPoolExecutor,
    server: HttpServer,
    broker: localinfra.Tansu,
    token: str,
    clicks: int,
    rate: float | None = None,
) -> dict[str, float]:
    """One load-generator run, with the CPU every process used meanwhile."""
    before = (
        cpu_seconds(server.process.pid),
        cpu_seconds(broker.process.pid),
        machine_busy_seconds(),
    )
    out = await asyncio.get_running_loop().run_in_executor(
        client, drive, server.port, token, clicks, CONNECTIONS, rate
    )
    used_server = cpu_seconds(server.process.pid) - before[0]
    used_broker = cpu_seconds(broker.process.pid) - before[1]
    used_machine = machine_busy_seconds() - before[2]
    seconds = out["seconds"]
    latencies = sorted(out["latencies_ms"])
    ours = used_server + used_broker + out["cpu_seconds"]
    return {
        "clicks_per_s": round(clicks / seconds),
        "p50_ms": round(_percentile(latencies, 0.50), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 2),
        "server_cpu_us_per_click": round(used_server / clicks * 1e6),
        "server_cpu_share": round(used_server / seconds, 2),
        "client_cpu_share": round(out["cpu_seconds"] / seconds, 2),
        "broker_cpu_share": round(used_broker / seconds, 2),
        # everything else on the machine (Postgres, other users), in cores
        "other_cpu_share": round(max(used_machine - ours, 0.0) / seconds, 2),
    }


def _median(samples: list[dict[str, float]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


async def run() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hodhod-bench-tracker-"))
    load_before = os.getloadavg()
    broker = await asyncio.to_thread(localinfra.Tansu.start, log_path=tmp / "tansu.log")
    database = await Database.create(tmp)
    server = None
    client = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    saturated: list[dict[str, float]] = []
    paced: list[dict[str, float]] = []
    try:
        await ensure_topics(broker.bootstrap, platform_topics(), partitions=3)
        app_id, (token,) = await provision_trackers(database.url, count=1, store_url=STORE_URL)
        server = await serve_http(
            "tracker",
            bootstrap=broker.bootstrap,
            database_url=database.url,
            python_args=os.environ.get("BENCH_TRACKER_PROFILE", "").split(),
        )
        await check_redirect(server.port, token)
        # warm-up: the client process, the connections, the tracker cache, the producer
        await measure(client, server, broker, token, WARM_UP)
        for rep in range(REPEATS):
            saturated.append(await measure(client, server, broker, token, CLICKS))
            print(f"  closed loop rep {rep}: {saturated[-1]}", flush=True)
        # the best repetition is the one the machine's other users disturbed least
        best = max(s["clicks_per_s"] for s in saturated)
        pace = min(TARGET_CLICKS_PER_S, round(PACE_FRACTION * best))
        for rep in range(REPEATS):
            paced.append(await measure(client, server, broker, token, CLICKS // 2, pace))
            print(f"  paced at {pace}/s rep {rep}: {paced[-1]}", flush=True)
        answered = 1 + WARM_UP + REPEATS * (CLICKS + CLICKS // 2)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{server.port}/metrics")).text
        values = await read_topic(broker.bootstrap, "clicks", expected=answered)
    finally:
        client.shutdown()
        if server is not None:
            server.stop()
        await database.drop()
        await asyncio.to_thread(broker.stop)
    clicks = [decode(ClickRecorded, v) for v in values]
    published = sum(
        1
        for c in clicks
        if c.app_id == app_id and c.tracker_token == token and c.kind == "click" and not c.is_bot
    )
    counted = _metric(metrics, "hodhod_tracker_clicks_total", outcome="click")
    failures = _metric(metrics, "hodhod_tracker_publish_failures_total")
    if published != answered or len({c.click_id for c in clicks}) != len(clicks):
        raise RuntimeError(
            f"{answered} clicks answered 302 but {published} human clicks on the topic "
            f"({len(clicks)} records; tracker publish failures: {failures:.0f})"
        )
    rate = round(_median(saturated, "clicks_per_s"))
    p99 = round(_median(saturated, "p99_ms"), 2)
    cpu_per_click = round(_median(saturated, "server_cpu_us_per_click"))
    figures = {
        "clicks_per_s": rate,
        "best_repetition_clicks_per_s": best,
        "p50_ms": round(_median(saturated, "p50_ms"), 2),
        "p99_ms": p99,
        "paced_clicks_per_s": pace,
        "paced_p50_ms": round(_median(paced, "p50_ms"), 2),
        "paced_p99_ms": round(_median(paced, "p99_ms"), 2),
        "server_cpu_us_per_click": cpu_per_click,
        "clicks_per_s_per_server_cpu_second": round(1e6 / cpu_per_click),
        "server_cpu_share": _median(saturated, "server_cpu_share"),
        "client_cpu_share": _median(saturated, "client_cpu_share"),
        "broker_cpu_share": _median(saturated, "broker_cpu_share"),
        "other_cpu_share": _median(saturated, "other_cpu_share"),
        "clicks_answered_302": answered,
        "clicks_on_topic": published,
        "tracker_clicks_counted": int(counted),
        "tracker_publish_failures": int(failures),
    }
    return {
        "parameters": {
            "clicks_per_repeat": CLICKS,
            "paced_clicks_per_repeat": CLICKS // 2,
            "connections": CONNECTIONS,
            "repeats": REPEATS,
            "statistic": "median of repetitions",
            "warm_up_clicks": WARM_UP,
            "paced_rate": f"min(target, {PACE_FRACTION} x best closed-loop clicks/s)",
            "uvicorn_workers": 1,
            "load_generator": "separate process, uvloop + asyncio streams",
            "broker": "Tansu, same host",
            "user_agent": PHONE_UA,
            "load_average_before": [round(x, 2) for x in load_before],
        },
        "figures": figures,
        "targets": [
            {
                "name": "clicks_per_s",
                "value": rate,
                "minimum": TARGET_CLICKS_PER_S,
                "met": rate >= TARGET_CLICKS_PER_S,
            },
            {"name": "p99_ms", "value": p99, "maximum": TARGET_P99_MS, "met": p99 < TARGET_P99_MS},
        ],
        "samples": {"closed_loop": saturated, "paced": paced},
    }
