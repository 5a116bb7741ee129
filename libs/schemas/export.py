"""Export each topic's JSON Schema for other backends (`docs/schemas/<topic>.json`).

Output is deterministic (sorted keys, fixed indentation, trailing newline) so the
committed files can be compared byte for byte with a fresh export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from libs.schemas import CONTRACTS, dlq
from libs.schemas.dlq import DlqRecord

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _document(
    name: str, topic: str, model: type[BaseModel], key_rule: str, examples: list[dict[str, Any]]
) -> str:
    schema = model.model_json_schema(mode="serialization")
    schema.update(
        {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": f"hodhod/schemas/{name}.json",
            "title": f"hodhod.{name}.{model.__name__}",
            "x-topic": topic,
            "x-kafka-key": key_rule,
            "examples": examples,
        }
    )
    # ensure_ascii=False keeps Persian examples readable in review.
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_json_schemas(out_dir: Path) -> list[Path]:
    """Write `<topic>.json` for every topic plus `dlq.json` into `out_dir`.

    Creates `out_dir` if needed and overwrites existing files; idempotent. Returns
    the written paths, topics first in registry order, then `dlq.json`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = [
        (c.topic, _document(c.topic, c.topic, c.model, c.key_rule, c.examples))
        for c in CONTRACTS.values()
    ]
    documents.append(
        ("dlq", _document("dlq", dlq.dlq_topic("<topic>"), DlqRecord, dlq.KEY_RULE, dlq.EXAMPLES))
    )
    written = []
    for name, text in documents:
        path = out_dir / f"{name}.json"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
