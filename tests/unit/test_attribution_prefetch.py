"""The text-array literals the set-wise reads send their keys in (the round trip through
Postgres: tests/integration/test_attribution_prefetch.py)."""

from __future__ import annotations

import pytest

from services.attribution.prefetch import _texts


@pytest.mark.parametrize(
    ("values", "literal"),
    [
        ([], "{}"),
        (["a"], '{"a"}'),
        (["a", "b-1", ""], '{"a","b-1",""}'),
        ([None], "{NULL}"),
        (["a", None, None, "b"], '{"a",NULL,NULL,"b"}'),
        (["NULL", None], '{"NULL",NULL}'),
        (["{x,y}", " z "], '{"{x,y}"," z "}'),
        (['q"t', None], '{"q\\"t",NULL}'),
        (["b\\s", "a"], '{"b\\\\s","a"}'),
        (['","', "a"], '{"\\",\\"","a"}'),
        (["a\x00b", None], '{"a\x00b",NULL}'),
    ],
)
def test_text_array_literal(values: list[str | None], literal: str) -> None:
    assert _texts(values) == literal
