"""Session infrastructure: a real Tansu broker, a fresh Postgres database and a chDB
directory, started once for the session; and the whole platform in this process
(every service, one uvicorn on a free port), started on first use.

Tests isolate themselves by creating their own app (``app_keys``): every table, topic
record and query is scoped by app id.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime import clickhouse, localinfra, postgres
from libs.runtime.kafka import ensure_topics, platform_topics
from libs.runtime.settings import PlatformSettings
from libs.runtime.tenancy import provision_app
from services.dispatcher.credentials import new_master_key

DEFAULT_TEST_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hodhod-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tansu(tmp_root: Path) -> Iterator[localinfra.Tansu]:
    broker = localinfra.Tansu.start(log_path=tmp_root / "tansu.log")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def database_url(tmp_root: Path) -> Iterator[str]:
    """A fresh database on the machine's Postgres if it answers, else embedded."""
    explicit = os.environ.get("HODHOD_TEST_DATABASE_URL")
    base = explicit or DEFAULT_TEST_DATABASE
    embedded = None
    if explicit is None and not asyncio.run(postgres.accepts_connections(base)):
        embedded = localinfra.EmbeddedPostgres(tmp_root / "pg")
        base = embedded.url("postgres")
    head, _, tail = base.partition("?")
    root = head.rsplit("/", 1)[0]
    url = f"{root}/hodhod_test_{secrets.token_hex(4)}" + (f"?{tail}" if tail else "")
    asyncio.run(postgres.ensure_database(url))
    postgres.migrate(url)
    yield url
    asyncio.run(postgres.drop_database(url))
    if embedded is not None:
        embedded.stop()


@pytest.fixture(scope="session")
def clickhouse_url(tmp_root: Path) -> str:
    url = f"chdb://{tmp_root / 'clickhouse'}"
    from services.ingest.warehouse import MIGRATIONS

    client = clickhouse.get_client(url)
    clickhouse.migrate(client, MIGRATIONS, "hodhod")
    return url


@pytest.fixture(scope="session")
def settings(tansu: localinfra.Tansu, database_url: str, clickhouse_url: str) -> PlatformSettings:
    asyncio.run(ensure_topics(tansu.bootstrap, platform_topics(), partitions=3))
    return PlatformSettings(
        environment="test",
        kafka_bootstrap=tansu.bootstrap,
        database_url=database_url,
        clickhouse_url=clickhouse_url,
        clickhouse_database="hodhod",
        http_port=localinfra.free_port(),
        # Tansu answers a waiting fetch only when the wait expires, so every idle
        # consumer polls once per wait: at 10 ms the platform's idle consumers took 26 %
        # of a core of this process, at 50 ms 11 % (each hop waits 20 ms longer on
        # average; the platform tests ran 20–40 % faster on 2 cores).
        kafka_fetch_max_wait_ms=50,
        kafka_session_timeout_ms=6_000,
        dispatcher_secrets_key=new_master_key(),
    )


@pytest_asyncio.fixture(loop_scope="session")
async def sessions(settings: PlatformSettings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the test database, for tests that drive a handler directly."""
    engine = postgres.create_engine(settings.database_url, pool_size=4)
    try:
        yield postgres.session_factory(engine)
    finally:
        await engine.dispose()


@dataclass
class Platform:
    base_url: str
    settings: PlatformSettings
    app: Any
    crashes: list[BaseException] = field(default_factory=list)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def platform(settings: PlatformSettings) -> AsyncIterator[Platform]:
    """Every service in this process, as ``hodhod up`` runs them."""
    import uvicorn

    from libs.runtime.service import compose
    from services.cli import all_services

    crashes: list[BaseException] = []

    def on_crash(task: asyncio.Task[None]) -> None:
        exc = task.exception()
        assert exc is not None
        crashes.append(exc)

    app = compose(list(all_services().values()), settings, on_crash=on_crash)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError("the platform did not start")
        await asyncio.sleep(0.05)
    running = app.state.running
    await asyncio.wait_for(asyncio.gather(*(r.assigned.wait() for r in running.consumers)), 60)
    yield Platform(f"http://127.0.0.1:{settings.http_port}", settings, app, crashes)
    server.should_exit = True
    await asyncio.wait_for(serving, 30)
    assert not crashes, f"consumers crashed during the session: {crashes!r}"


SDK_USER_AGENT = "Dalvik/2.1.0 (Linux; U; Android 13; SM-A536E Build/TP1A.220624.014)"


@functools.cache
def tls() -> ssl.SSLContext:
    """One TLS context for the session's HTTP clients: a new httpx client otherwise loads
    the CA bundle, tens of milliseconds of CPU each (the tests speak plain HTTP)."""
    return httpx.create_ssl_context()


@pytest_asyncio.fixture(loop_scope="session")
async def http(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running platform that looks like an app's SDK: the attribution
    service rejects installs sent by scripted clients (python-httpx) as bot traffic."""
    async with httpx.AsyncClient(
        base_url=platform.base_url,
        timeout=30,
        follow_redirects=False,
        headers={"User-Agent": SDK_USER_AGENT},
        verify=tls(),
    ) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def app_keys(settings: PlatformSettings) -> dict[str, str]:
    """A new app with one key of each kind: the unit of test isolation."""
    keys = await provision_app(settings.database_url, name=f"test-{secrets.token_hex(3)}")
    return asdict(keys)


async def eventually(probe: Any, *, within: float = 30.0, interval: float = 0.1) -> Any:
    """Await ``probe()`` until it returns a truthy value; fail with the last value."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


@asynccontextmanager
async def local_http_server(app: Any) -> AsyncIterator[str]:
    """Serve the ASGI ``app`` on a free local port for the block (a stand-in for an
    external provider speaking plain HTTP); yields its base URL."""
    import uvicorn

    port = localinfra.free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 — uvicorn exposes a flag, not an event
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
