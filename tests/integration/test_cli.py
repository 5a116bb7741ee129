"""``hodhod`` as a newcomer runs it: ``up`` in one process, ``app create`` beside it, a
second ``up`` refused, Ctrl-C stopping everything."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from libs.runtime import localinfra, postgres
from libs.runtime.settings import PlatformSettings

pytestmark = pytest.mark.integration

HODHOD = [sys.executable, "-m", "services.cli"]


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"hodhod up exited early: {process.stderr.read().decode()}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=1)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("hodhod up was not ready in time")


def test_up_app_create_second_up_and_ctrl_c(tmp_path: Path, settings: PlatformSettings) -> None:
    port = localinfra.free_port()
    env = {
        **os.environ,
        "HODHOD_VAR_DIR": str(tmp_path / "var"),
        "HODHOD_HTTP_PORT": str(port),
        "HODHOD_CLICKHOUSE_URL": f"chdb://{tmp_path / 'var' / 'clickhouse'}",
        # The test server's Postgres: embedded Postgres is exercised by `make run`.
        "DATABASE_URL": settings.database_url.rsplit("/", 1)[0] + f"/hodhod_cli_{port}",
        "HODHOD_LOG_FORMAT": "text",
    }
    env.pop("HODHOD_KAFKA_BOOTSTRAP", None)  # `up` starts its own Tansu
    up = subprocess.Popen(
        [*HODHOD, "up"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        ready = wait_ready(f"http://127.0.0.1:{port}", up)
        assert ready["checks"] == {
            "postgres": True,
            "kafka": True,
            "clickhouse": True,
            "consumers": True,
            "timed": True,
        }
        state = json.loads((tmp_path / "var" / "hodhod.json").read_text())
        assert state["pid"] == up.pid
        assert state["database_url"] is None  # from the environment: not written to disk

        created = subprocess.run(
            [*HODHOD, "app", "create", "Beside up"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
            check=True,
        )
        keys = json.loads(created.stdout)
        assert set(keys) == {"app_id", "sdk_key", "server_key", "admin_token"}
        trackers = httpx.get(
            f"http://127.0.0.1:{port}/admin/v1/trackers",
            headers={"Authorization": f"Bearer {keys['admin_token']}"},
        )
        assert trackers.status_code == 200 and trackers.json() == {"items": []}

        second = subprocess.run(
            [*HODHOD, "up"], env=env, cwd=tmp_path, capture_output=True, timeout=60
        )
        assert second.returncode == 1
        assert b"already running in this directory" in second.stderr
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(30)
        finally:
            if up.poll() is None:
                up.kill()
        asyncio.run(postgres.drop_database(env["DATABASE_URL"]))
    assert up.returncode == 0, up.stderr.read().decode()[-2000:]
    assert not (tmp_path / "var" / "hodhod.json").exists()
    # A new `up` may start now that the first one is gone.
    assert localinfra.VarDir(tmp_path / "var").read_state() is None
