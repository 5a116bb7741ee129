"""Every example payload in libs/schemas decodes and re-encodes stably; the exported
JSON Schemas in docs/schemas match the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from libs.schemas import CONTRACTS, DlqRecord, TopicContract, decode, encode
from libs.schemas.dlq import EXAMPLES as DLQ_EXAMPLES
from libs.schemas.dlq import key as dlq_key
from libs.schemas.export import export_json_schemas

DOCS_SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"

CASES = [
    pytest.param(contract, example, id=f"{topic}-{i}")
    for topic, contract in CONTRACTS.items()
    for i, example in enumerate(contract.examples)
]


@pytest.mark.parametrize(("contract", "example"), CASES)
def test_example_decodes_and_reencodes_stably(
    contract: TopicContract[Any], example: dict[str, Any]
) -> None:
    first = decode(contract.model, orjson.dumps(example))
    encoded = encode(first)
    second = decode(contract.model, encoded)
    assert second == first
    assert encode(second) == encoded
    assert contract.key(second) == contract.key(first)
    assert contract.key(first).startswith(f"{first.app_id}")


@pytest.mark.parametrize("example", DLQ_EXAMPLES)
def test_dlq_examples_decode_and_reencode_stably(example: dict[str, Any]) -> None:
    first = decode(DlqRecord, orjson.dumps(example))
    assert decode(DlqRecord, encode(first)) == first
    assert first.value_bytes()
    assert dlq_key(first) is None or isinstance(dlq_key(first), str)


def test_examples_use_persian_text_somewhere() -> None:
    text = b"".join(orjson.dumps(c.examples) for c in CONTRACTS.values()).decode()
    assert any("\u0600" <= ch <= "\u06ff" for ch in text)


def test_committed_json_schemas_match_a_fresh_export(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path)
    fresh = {p.name: p.read_bytes() for p in written}
    committed = {p.name: p.read_bytes() for p in DOCS_SCHEMAS.glob("*.json")}
    assert sorted(committed) == sorted(fresh), "run export_json_schemas(docs/schemas)"
    for name, content in fresh.items():
        assert committed[name] == content, f"docs/schemas/{name} is stale; re-export"


def test_export_is_deterministic(tmp_path: Path) -> None:
    a = [p.read_bytes() for p in export_json_schemas(tmp_path / "a")]
    b = [p.read_bytes() for p in export_json_schemas(tmp_path / "b")]
    assert a == b
    for content in a:
        doc = orjson.loads(content)
        assert content.endswith(b"}\n")
        assert doc["x-topic"] and doc["x-kafka-key"] and doc["$id"]
