"""PostHog's import-boundary test: pure modules never pull in I/O frameworks.

Each module is imported in a fresh interpreter so nothing another test imported can
mask (or cause) a violation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = (
    "fastapi",
    "sqlalchemy",
    "aiokafka",
    "clickhouse_connect",
    "prometheus_client",
    "asyncpg",
    "httpx",
)
SERVICE_LOGIC = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for path in ROOT.glob("services/*/logic.py")
)
# Pure modules beside a service's logic.py (split from it by domain).
PURE_EXTRAS = [
    "services.attribution.outcomes",
    "services.attribution.fraud",
    "services.attribution.postback_rules",
    "services.attribution.ledger",
    "libs.runtime.signing",
    "libs.runtime.fraudrules",
    "libs.runtime.errors",
    "services.admin.segments",
    "services.admin.users",
    "services.segmenter.identity",
    "services.dispatcher.sms",
    "services.dispatcher.credentials",
    "services.dispatcher.providers.base",
    "services.dispatcher.providers.addresses",
    "services.journey.timing",
]
PURE_MODULES = [
    *SERVICE_LOGIC,
    *PURE_EXTRAS,
    "libs.schemas",
    "libs.journeys.definition",
    "libs.journeys.validate",
    "libs.rules",
    "libs.rules.language",
    "libs.rules.semantics",
    "libs.rules.profile",
    "libs.rules.evaluation",
]

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
forbidden = json.loads(sys.argv[2])
print(json.dumps(sorted(
    name for name in sys.modules if name.split(".")[0] in forbidden)))
"""


def test_every_service_logic_module_is_covered() -> None:
    services = {p.parent.name for p in ROOT.glob("services/*/logic.py")}
    assert {"tracker", "ingest", "attribution", "segmenter", "journey", "dispatcher"} <= services


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io_framework(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module, json.dumps(FORBIDDEN)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    leaked = json.loads(done.stdout.strip().splitlines()[-1])
    assert leaked == [], f"{module} imports {leaked}"
