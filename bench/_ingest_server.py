"""The ingest HTTP API alone on one uvicorn worker, for bench/ingest_http.py (a child
process, so the load generator does not share its core)."""

from __future__ import annotations

import uvicorn

from libs.runtime.service import ServiceSpec, compose
from libs.runtime.settings import PlatformSettings
from services.ingest.api import router


def main() -> None:
    settings = PlatformSettings()
    app = compose([ServiceSpec(name="ingest-api", routers=lambda: [router])], settings)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
