"""Dispatcher rules: personalise a message in a sandbox. Pure.

Templates are Jinja2 rendered by a ``SandboxedEnvironment`` with autoescape off (the
channels are plain text) and ``StrictUndefined`` replaced by a default-friendly
undefined: ``{{ profile.attributes.name | default('friend') }}`` works, while attribute
access to Python internals raises ``SecurityError``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment

from libs.schemas import MessageContent

RECEIPT_NS = uuid.UUID("c4b0e1f2-7a8b-4c9d-9e0f-2b3c4d5e6f70")
MAX_RENDERED = 8192

_ENV = SandboxedEnvironment(autoescape=False, undefined=Undefined, trim_blocks=True)


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
    return uuid.uuid5(RECEIPT_NS, f"{job_id}|{status}").hex
