"""Dispatcher rules: personalise a message in a sandbox. Pure.

Templates are Jinja2 rendered in a sandbox with autoescape off (the channels are plain
text) and a lenient undefined, so ``{{ profile.attributes.name | default('friend') }}``
works. The sandbox hides Python internals (``''.__class__`` renders empty, deeper access
fails), refuses string/list repetition and powers that would allocate past the message
cap, and every failure while rendering a marketer's template is a ``RenderError``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError, Undefined
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from libs.schemas import MessageContent

RECEIPT_NS = uuid.UUID("c4b0e1f2-7a8b-4c9d-9e0f-2b3c4d5e6f70")
MAX_RENDERED = 8192

MAX_EXPONENT = 1000


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_RENDERED
                ):
                    raise SecurityError("repetition larger than a message is not allowed")
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError("exponent too large")
        return super().call_binop(context, operator, left, right)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(f"unsafe: access to attribute {attribute!r} is not allowed")


_ENV = _Sandbox(autoescape=False, undefined=Undefined, trim_blocks=True)


class RenderError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Rendered:
    title: str | None
    body: str
    url: str | None
    data: dict[str, str]


def _render(source: str | None, context: dict[str, Any], field: str) -> str | None:
    if source is None:
        return None
    try:
        text = _ENV.from_string(source).render(context)
    except TemplateError as exc:
        raise RenderError(field, str(exc)) from None
    except Exception as exc:
        raise RenderError(field, f"{type(exc).__name__}: {exc}") from None
    if len(text) > MAX_RENDERED:
        raise RenderError(field, f"renders to more than {MAX_RENDERED} characters")
    return text


def render(content: MessageContent, context: dict[str, Any]) -> Rendered:
    """Render every text field of ``content``; raises ``RenderError`` naming the field."""
    body = _render(content.body, context, "content.body") or ""
    if not body.strip():
        raise RenderError("content.body", "renders to an empty message")
    return Rendered(
        title=_render(content.title, context, "content.title"),
        body=body,
        url=_render(content.url, context, "content.url"),
        data={k: _render(v, context, f"content.data.{k}") or "" for k, v in content.data.items()},
    )


def receipt_id(job_id: str, status: str) -> str:
    """One receipt per (job, status): a replay republishes the same receipt id."""
    return uuid.uuid5(RECEIPT_NS, json.dumps([job_id, status])).hex
