"""``python -m bench [name ...]``: run the benchmarks, print and store their figures.

Exits non-zero only when a benchmark raises; a missed target is reported, not fatal.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def discover() -> list[str]:
    """Every benchmark module in bench/: ``*.py`` not starting with an underscore."""
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_"))


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run_one(name: str) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    started = time.perf_counter()
    outcome = module.run()
    if inspect.isawaitable(outcome):
        outcome = asyncio.run(outcome)  # type: ignore[arg-type]
    result: dict[str, Any] = {"benchmark": name, "machine": machine(), **outcome}
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def _want(target: dict[str, Any]) -> str:
    if "maximum" in target:
        return f"want < {target['maximum']}"
    return f"want >= {target['minimum']}"


def report(result: dict[str, Any]) -> None:
    print(f"\n== {result['benchmark']} ({result['wall_seconds']} s) ==")
    for key, value in result.get("figures", {}).items():
        print(f"  {key:<48} {value}")
    for target in result.get("targets", []):
        verdict = "met" if target["met"] else "MISSED"
        print(f"  target {target['name']}: {target['value']} ({_want(target)}) {verdict}")


def main(argv: list[str]) -> int:
    names = argv or discover()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        print(f"running bench.{name} ...", flush=True)
        try:
            result = run_one(name)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        report(result)
        path = RESULTS_DIR / f"{name}.json"
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"  -> {path.relative_to(BENCH_DIR.parent)}", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
