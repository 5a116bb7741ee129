"""One Hodhod HTTP service alone on one uvicorn worker, for the HTTP benchmarks: a child
process, so the load generator does not share its core.

``python -m bench._http_server <service>`` where ``<service>`` is ``ingest-api`` (the
event API's router, without ingest's consumers) or ``tracker``. Settings come from the
environment (``HODHOD_*``), as in production. Started by ``bench._infra.serve_http``.
"""

from __future__ import annotations

import signal
import sys

import uvicorn

from libs.runtime.service import ServiceSpec, compose
from libs.runtime.settings import PlatformSettings


def spec(service: str) -> ServiceSpec:
    """The ServiceSpec benchmarked as ``service``; SystemExit for an unknown name."""
    if service == "ingest-api":
        from services.ingest.api import router

        return ServiceSpec(name="ingest-api", routers=lambda: [router])
    if service == "tracker":
        from services.tracker.service import SERVICE

        return SERVICE
    raise SystemExit(f"unknown service {service!r}: expected ingest-api or tracker")


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m bench._http_server <ingest-api|tracker>")
    settings = PlatformSettings()
    # uvicorn re-raises SIGTERM once it has shut down; exiting normally instead lets a
    # profiler the child runs under (``python -m cProfile -o …``) write its output.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = compose([spec(argv[0])], settings)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
