"""Dispatcher rules: sandboxed personalisation and receipt ids."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from libs.schemas import MessageContent
from services.dispatcher.logic import (
    MAX_RENDERED,
    RECEIPT_NS,
    Rendered,
    RenderError,
    receipt_id,
    render,
)

PROFILE = {
    "profile": {"user_key": "u_1", "attributes": {"name": "مریم", "points": 120}, "locale": "fa-IR"}
}


def content(body: str = "x", **kw: Any) -> MessageContent:
    return MessageContent(body=body, **kw)


def render_error(c: MessageContent, ctx: dict[str, Any] | None = None) -> RenderError:
    with pytest.raises(RenderError) as info:
        render(c, PROFILE if ctx is None else ctx)
    return info.value


def test_personalises_every_field() -> None:
    c = content(
        "سلام {{ profile.attributes.name }}، {{ profile.attributes.points }} امتیاز",
        title="{{ first_name }}!",
        url="app://u/{{ profile.user_key }}",
        data={"k": "{{ profile.locale }}", "plain": "v"},
    )
    got = render(c, {**PROFILE, "first_name": "Ali"})
    assert got == Rendered(
        title="Ali!",
        body="سلام مریم، 120 امتیاز",
        url="app://u/u_1",
        data={"k": "fa-IR", "plain": "v"},
    )


def test_optional_fields_stay_none() -> None:
    assert render(content("hi"), {}) == Rendered(title=None, body="hi", url=None, data={})


def test_default_filter_for_missing_attribute() -> None:
    c = content("سلام {{ profile.attributes.nickname | default('دوست') }}")
    assert render(c, PROFILE).body == "سلام دوست"
    assert render(c, {"profile": {"attributes": {"nickname": "Sara"}}}).body == "سلام Sara"


def test_default_filter_with_missing_top_level_variable() -> None:
    assert render(content("Hi {{ first_name | default('friend') }}"), {}).body == "Hi friend"


def test_missing_variable_renders_empty() -> None:
    assert render(content("Hi {{ first_name }}!"), {}).body == "Hi !"


def test_persian_text_unchanged() -> None:
    body = "سبد خرید شما منتظر است 🛒 تا پایان امروز ۱۰٪ تخفیف بگیرید. <b>&amp;</b>"
    assert render(content(body), {}).body == body


def test_no_html_escaping() -> None:
    got = render(content("{{ v }}"), {"v": "<a href='x'>&</a>"})
    assert got.body == "<a href='x'>&</a>"


def test_control_flow_and_filters() -> None:
    c = content(
        "{% if profile.attributes.points > 100 %}VIP{% else %}-{% endif %} "
        "{{ profile.attributes.name | upper }}{% for i in [1, 2] %}{{ i }}{% endfor %}"
    )
    assert render(c, PROFILE).body == "VIP مریم12"


@pytest.mark.parametrize(
    "body",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "x{{ ''.__class__.__mro__ }}",
        "{{ profile.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ (1).__class__.__base__.__subclasses__() }}",
        "{{ ''.format.__self__.__class__.__mro__ }}",
        "{{ profile.attributes.name.__class__.__mro__ }}",
    ],
)
def test_sandbox_blocks_python_internals(body: str) -> None:
    err = render_error(content(body))
    assert err.field == "content.body"
    assert "unsafe" in err.reason or "undefined" in err.reason


@pytest.mark.parametrize(
    "body",
    [
        "x{{ ''.format.__globals__ }}",
        "x{{ ''.__class__ }}",
        "x{{ profile.__init__ }}",
    ],
)
def test_single_unsafe_lookups_are_refused(body: str) -> None:
    """Even one unsafe step fails the render: a template that probes internals is a
    mistake or an attack, and either way must not be sent."""
    assert "unsafe" in render_error(content(body), PROFILE).reason


def test_sandbox_blocks_internals_in_other_fields() -> None:
    assert render_error(content("ok", title="{{ ''.__class__.__mro__ }}")).field == (
        "content.title"
    )


def test_single_unsafe_attribute_raises() -> None:
    render_error(content("Hi {{ ''.__class__ }}"))


@pytest.mark.parametrize(
    ("c", "field"),
    [
        (content("{{ unclosed"), "content.body"),
        (content("{% if %}"), "content.body"),
        (content("{% for x in y %}"), "content.body"),
        (content("ok", title="{{ 1 + }}"), "content.title"),
        (content("ok", url="{% endif %}"), "content.url"),
        (content("ok", data={"deep": "{{ oops"}), "content.data.deep"),
    ],
)
def test_syntax_errors_name_the_field(c: MessageContent, field: str) -> None:
    err = render_error(c)
    assert err.field == field
    assert str(err).startswith(field + ": ")


def test_undefined_attribute_of_undefined_is_a_render_error() -> None:
    assert render_error(content("{{ nothing.at.all }}"), {}).field == "content.body"


@pytest.mark.parametrize(
    "body", ["{{ missing }}", "   ", "{{ missing }}\n\t ", "{% if false %}x{% endif %}", "{{ '' }}"]
)
def test_empty_rendered_body_rejected(body: str) -> None:
    err = render_error(content(body), {})
    assert err.field == "content.body" and "empty" in err.reason


def test_empty_title_is_fine() -> None:
    assert render(content("body", title="{{ missing }}"), {}).title == ""


def test_output_length_cap() -> None:
    assert len(render(content("{{ 'a' * n }}"), {"n": MAX_RENDERED}).body) == MAX_RENDERED
    err = render_error(content("{{ 'a' * n }}"), {"n": MAX_RENDERED + 1})
    assert err.field == "content.body"
    assert "larger than a message" in err.reason
    # produced another way than by repetition, the cap still holds
    err = render_error(content("{% for i in range(n) %}a{% endfor %}"), {"n": MAX_RENDERED + 1})
    assert err.field == "content.body" and str(MAX_RENDERED) in err.reason


def test_output_length_cap_applies_to_every_field() -> None:
    ctx = {"n": MAX_RENDERED + 1}
    assert render_error(content("ok", title="{{ 'a' * n }}"), ctx).field == "content.title"
    assert render_error(content("ok", url="{{ 'a' * n }}"), ctx).field == "content.url"
    assert render_error(content("ok", data={"k": "{{ 'a' * n }}"}), ctx).field == ("content.data.k")


@pytest.mark.parametrize(
    "body",
    [
        "{{ 1 / 0 }}",
        "{{ profile.attributes.points + 'x' }}",
        "{{ range(10**9) | length }}",
        "{{ 'a' * 10**19 }}",
    ],
)
def test_runtime_errors_are_render_errors(body: str) -> None:
    assert render_error(content(body)).field == "content.body"


def test_receipt_id_is_deterministic() -> None:
    assert receipt_id("j1", "sent") == receipt_id("j1", "sent")
    assert receipt_id("j1", "sent") == uuid.uuid5(RECEIPT_NS, '["j1", "sent"]').hex
    assert (
        len({receipt_id("j1", "sent"), receipt_id("j1", "failed"), receipt_id("j2", "sent")}) == 3
    )
