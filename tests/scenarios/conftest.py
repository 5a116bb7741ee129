"""A clocked platform for the scenarios whose time passes (journeys: hours, days, a
birthday at 10:00): every service in this process, composed with a ``ManualClock`` that
the tests move instead of sleeping.

It has its own Tansu broker and its own Postgres database, so that its consumer groups
and timed work never meet the session platform's (which runs on the wall clock and would
find this platform's timers due, or take its records). chDB allows one engine path per
process, so it shares the session's ClickHouse directory; everything there is scoped by
app id, and each test makes its own app.

The clock starts 30 days before the wall clock: the users' events are stamped with the
clock's time (``ts``), which ingest's server-to-server endpoint accepts in the past but
not more than an hour ahead of its own (wall) clock. Tests only ever move it forward,
and by less than those 30 days in all.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from libs.runtime import localinfra, postgres
from libs.runtime.clock import ManualClock
from libs.runtime.kafka import ensure_topics, platform_topics
from libs.runtime.settings import PlatformSettings
from libs.runtime.tenancy import provision_app
from libs.schemas import SendJob, decode
from tests.conftest import SDK_USER_AGENT


@dataclass
class Clocked:
    base_url: str
    settings: PlatformSettings
    clock: ManualClock
    app: Any
    crashes: list[BaseException]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def clocked(settings: PlatformSettings, tmp_root: Path) -> AsyncIterator[Clocked]:
    import uvicorn

    from libs.runtime.service import compose
    from services.cli import all_services

    broker = localinfra.Tansu.start(log_path=tmp_root / "tansu-clocked.log")
    head, _, tail = settings.database_url.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/hodhod_clocked_{secrets.token_hex(4)}" + (
        f"?{tail}" if tail else ""
    )
    await postgres.ensure_database(url)
    await asyncio.to_thread(postgres.migrate, url)
    await ensure_topics(broker.bootstrap, platform_topics(), partitions=3)
    own = settings.model_copy(
        update={
            "kafka_bootstrap": broker.bootstrap,
            "database_url": url,
            "http_port": localinfra.free_port(),
            # The scenarios' webhook receivers listen on loopback.
            "journey_webhook_allow_private": True,
        }
    )
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=30))
    crashes: list[BaseException] = []

    def on_crash(task: asyncio.Task[None]) -> None:
        exc = task.exception()
        assert exc is not None
        crashes.append(exc)

    app = compose(list(all_services().values()), own, on_crash=on_crash, clock=clock)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=own.http_port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("the clocked platform did not start")
            await asyncio.sleep(0.05)
        running = app.state.running
        await asyncio.wait_for(asyncio.gather(*(r.assigned.wait() for r in running.consumers)), 60)
        yield Clocked(f"http://127.0.0.1:{own.http_port}", own, clock, app, crashes)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        broker.stop()
        await postgres.drop_database(url)
    assert not crashes, f"the clocked platform's consumers crashed: {crashes!r}"


@pytest_asyncio.fixture(loop_scope="session")
async def clocked_http(clocked: Clocked) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=clocked.base_url, timeout=30, headers={"User-Agent": SDK_USER_AGENT}
    ) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def clocked_keys(clocked: Clocked) -> dict[str, str]:
    keys = await provision_app(clocked.settings.database_url, name=f"sc-{secrets.token_hex(3)}")
    return asdict(keys)


class Jobs:
    """The send-jobs the platform published for one app, read from the topic."""

    def __init__(self, consumer: AIOKafkaConsumer, app_id: str) -> None:
        self._consumer = consumer
        self._app_id = app_id
        self.seen: list[SendJob] = []

    async def poll(self) -> list[SendJob]:
        batches = await self._consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                job = decode(SendJob, record.value)
                if job.app_id == self._app_id:
                    self.seen.append(job)
        return self.seen

    async def of(self, user_key: str, *, count: int, within: float = 30.0) -> list[SendJob]:
        """Wait (real time: the platform works asynchronously) until ``user_key`` has
        ``count`` jobs; fail if more arrive or not enough within ``within`` seconds."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            mine = [j for j in await self.poll() if j.user_key == user_key]
            if len(mine) >= count or asyncio.get_running_loop().time() > deadline:
                assert len(mine) == count, [(j.step_id, j.channel) for j in mine]
                return mine

    async def quiet(self, user_key: str, *, expect: int, settle: float = 1.5) -> None:
        """Assert that ``user_key`` still has exactly ``expect`` jobs after the platform
        had ``settle`` seconds to publish anything it was going to."""
        deadline = asyncio.get_running_loop().time() + settle
        while asyncio.get_running_loop().time() < deadline:
            await self.poll()
        mine = [j for j in self.seen if j.user_key == user_key]
        assert len(mine) == expect, [(j.step_id, j.channel) for j in mine]


@pytest_asyncio.fixture(loop_scope="session")
async def jobs(clocked: Clocked, clocked_keys: dict[str, str]) -> AsyncIterator[Jobs]:
    consumer = AIOKafkaConsumer(
        "send-jobs",
        bootstrap_servers=clocked.settings.kafka_bootstrap,
        group_id=f"test-jobs-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        # Joined and positioned before the test acts, so nothing it causes is missed.
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        for partition in consumer.assignment():
            await consumer.position(partition)
        yield Jobs(consumer, clocked_keys["app_id"])
    finally:
        await consumer.stop()


class Sdk:
    """The app reporting its users' events, stamped with the platform's clock. They go
    through the server-to-server endpoint, which takes any past time (the SDK endpoint
    refuses events older than 7 days, and the clock runs 30 days behind the wall)."""

    def __init__(self, http: httpx.AsyncClient, keys: dict[str, str], clock: ManualClock) -> None:
        self._http = http
        self._keys = keys
        self._clock = clock

    async def send(self, name: str, **fields: Any) -> str:
        event_id = str(uuid.uuid4())
        event = {"event_id": event_id, "name": name, "ts": self._clock.now().isoformat(), **fields}
        answer = await self._http.post(
            "/v1/s2s/events",
            headers={"Authorization": f"Bearer {self._keys['server_key']}"},
            json={"events": [event]},
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
        return event_id


@pytest_asyncio.fixture(loop_scope="session")
async def sdk(
    clocked_http: httpx.AsyncClient, clocked_keys: dict[str, str], clocked: Clocked
) -> Sdk:
    return Sdk(clocked_http, clocked_keys, clocked.clock)


def admin(keys: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['admin_token']}"}
