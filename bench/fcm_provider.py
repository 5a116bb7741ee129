"""The FCM adapter alone: sends/s through ``FcmProvider`` to the local fake FCM, and
the ratio to a bare httpx loop posting the same requests to the same fake in the same
run (the messaging issue's targets are ≥ 5,000 sends/s and ≥ 0.6 for the whole
dispatcher path; this isolates the adapter's share).

The fake (``python -m tests.fakes.fcm``: OAuth2 token endpoint and the v1 send
endpoint, HTTP/1.1, uvloop) runs in a child process so it has a core of its own; the
sender is this process. Both loops keep CONCURRENCY requests in flight over one pooled
client and send SENDS messages, alternately, REPEATS times each; the best and the
median of each are reported. Tune with BENCH_FCM_SENDS, BENCH_FCM_CONCURRENCY and
BENCH_FCM_REPEATS.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from libs.runtime import localinfra
from services.dispatcher.providers.base import Address, Message
from services.dispatcher.providers.fcm import FcmProvider, fcm_message
from services.dispatcher.providers.http import HttpOptions, client

SENDS = int(os.environ.get("BENCH_FCM_SENDS", "20000"))
CONCURRENCY = int(os.environ.get("BENCH_FCM_CONCURRENCY", "64"))
REPEATS = int(os.environ.get("BENCH_FCM_REPEATS", "3"))
ROOT = Path(__file__).resolve().parent.parent

MESSAGE = Message(
    app_id="bench", job_id="job-0", channel="push", title="سلام مریم",
    body="سبد خرید شما منتظر است 🛒 تا پایان امروز ۱۰٪ تخفیف بگیرید.",
    data={"campaign": "cart-abandon"}, url="digikala://cart",
)  # fmt: skip


async def _adapter(provider: FcmProvider) -> float:
    queue = iter(range(SENDS))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for i in queue:
            outcome = await provider.send(MESSAGE, Address(kind="fcm", value=f"device-{i}"))
            failures += outcome.status != "sent"

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{failures} adapter sends failed")
    return SENDS / elapsed


async def _bare(http: httpx.AsyncClient, url: str, token: str) -> float:
    queue = iter(range(SENDS))
    headers = {
        "authorization": f"Bearer {token}",
        "content-type": "application/json; charset=UTF-8",
    }

    async def worker() -> None:
        for i in queue:
            body = orjson.dumps({"message": fcm_message(MESSAGE, f"device-{i}")})
            response = await http.post(url, content=body, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"bare send answered {response.status_code}")
            orjson.loads(response.content)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return SENDS / (time.perf_counter() - started)


async def run() -> dict[str, Any]:
    port = localinfra.free_port()
    fake = subprocess.Popen(  # noqa: ASYNC220 — started once, before any timing
        [sys.executable, "-m", "tests.fakes.fcm", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        account = json.loads(await asyncio.to_thread(fake.stdout.readline))
        base = f"http://127.0.0.1:{port}"
        options = HttpOptions(max_connections=CONCURRENCY)
        shared = client(options, http2=True)
        provider = FcmProvider(
            service_account_info=account, client=shared, base_url=base,
            token_uri=f"{base}/token", options=options,
        )  # fmt: skip
        bare_client = client(options, http2=False)
        token = await provider._access_token()
        url = f"{base}/v1/projects/{account['project_id']}/messages:send"
        await _adapter(provider)  # warm both pools and the fake
        await _bare(bare_client, url, token)
        adapter_rates, bare_rates = [], []
        for _ in range(REPEATS):
            bare_rates.append(await _bare(bare_client, url, token))
            adapter_rates.append(await _adapter(provider))
        await shared.aclose()
        await bare_client.aclose()
    finally:
        fake.terminate()
        fake.wait(10)
    best_adapter, best_bare = max(adapter_rates), max(bare_rates)
    ratio = statistics.median(a / b for a, b in zip(adapter_rates, bare_rates, strict=True))
    return {
        "figures": {
            "sends_per_run": SENDS,
            "concurrency": CONCURRENCY,
            "adapter_sends_per_s_best": round(best_adapter),
            "adapter_sends_per_s_median": round(statistics.median(adapter_rates)),
            "bare_httpx_sends_per_s_best": round(best_bare),
            "bare_httpx_sends_per_s_median": round(statistics.median(bare_rates)),
            "ratio_adapter_to_bare_median": round(ratio, 3),
            "http_version": "1.1 (the fake over plain http)",
        },
        "targets": [
            {
                "name": "adapter sends/s",
                "value": round(best_adapter),
                "minimum": 5000,
                "met": best_adapter >= 5000,
            },
            {
                "name": "adapter / bare loop",
                "value": round(ratio, 3),
                "minimum": 0.6,
                "met": ratio >= 0.6,
            },
        ],
    }
