"""The journey definition language: shapes, graph rules, references and legacy forms."""

from __future__ import annotations

from typing import Any

import pytest

from libs.journeys.definition import DefinitionError, SendNode, legacy_form
from libs.journeys.validate import parse, references

SEGMENT = {"type": "segment_entered", "segment": "seg_1"}


def send(node_id: str, next_: str | None = None, **kw: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": node_id, "type": "send", "channel": "push"}
    node.update(kw or {"content": {"body": "hi"}})
    if next_ is not None:
        node["next"] = next_
    return node


def wait(node_id: str, next_: str, **kw: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "wait", "duration": {"hours": 2}, "next": next_, **kw}


def definition(*nodes: dict[str, Any], start: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"start": start or nodes[0]["id"], "nodes": list(nodes), **kw}


def error_of(trigger: Any, d: Any) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        parse(trigger, d)
    return caught.value


def test_abandoned_cart_parses() -> None:
    journey = parse(
        {"type": "event", "event": "add_to_cart", "dedup_key": "cart_id"},
        definition(
            wait("w", "bought"),
            {
                "id": "bought",
                "type": "wait_for_event",
                "event": "$purchase",
                "where": [{"prop": "cart_id", "op": "eq", "from_trigger": "cart_id"}],
                "timeout": {"minutes": 1},
                "on_event": "done",
                "on_timeout": "push",
            },
            send("push", "done"),
            {"id": "done", "type": "exit"},
            goal={"event": "$purchase", "within": {"days": 3}},
        ),
    )
    assert journey.definition.goal is not None
    assert journey.definition.goal.within.delta.days == 3
    assert journey.definition.entry.reentry == "once"


@pytest.mark.parametrize(
    ("d", "path"),
    [
        (definition(send("a", "nowhere")), "definition.nodes.0.next"),
        (definition(send("a"), start="b"), "definition.start"),
        (definition(send("a"), send("b")), "definition.nodes.1"),
        (definition(send("a", "b"), send("a")), "definition.nodes.1.id"),
        (
            definition(
                {
                    "id": "c",
                    "type": "condition",
                    "rule": {"reachable": "push"},
                    "yes": "s",
                    "no": "x",
                },
                send("s", "c"),
                {"id": "x", "type": "exit"},
            ),
            "definition.nodes.0",
        ),
        (
            definition(
                {
                    "id": "c",
                    "type": "condition",
                    "rule": {"attribute": "x", "op": "zz"},
                    "yes": "x",
                    "no": "x",
                },
                {"id": "x", "type": "exit"},
            ),
            "definition.nodes.0.rule.op",
        ),
        (definition({"id": "w", "type": "wait", "next": "w"}), "definition.nodes.0"),
        (definition(send("a", channel="fax")), "definition.nodes.0.channel"),
        (
            definition(
                {
                    "id": "s",
                    "type": "split",
                    "variants": [{"id": "a", "weight": 1, "next": "x"}],
                    "holdout": 100,
                },
                {"id": "x", "type": "exit"},
            ),
            "definition.nodes.0.holdout",
        ),
    ],
)
def test_bad_definitions_name_the_path(d: dict[str, Any], path: str) -> None:
    assert error_of(SEGMENT, d).path == path


def test_cycles_through_a_wait_are_allowed() -> None:
    journey = parse(
        SEGMENT,
        definition(
            send("remind", "pause"),
            wait("pause", "check"),
            {
                "id": "check",
                "type": "condition",
                "rule": {"reachable": "push"},
                "yes": "remind",
                "no": "x",
            },
            {"id": "x", "type": "exit"},
        ),
    )
    assert [n.id for n in journey.definition.nodes] == ["remind", "pause", "check", "x"]


def test_trigger_properties_only_in_event_journeys() -> None:
    d = definition(
        {
            "id": "w",
            "type": "wait_for_event",
            "event": "$purchase",
            "where": [{"prop": "cart_id", "op": "eq", "from_trigger": "cart_id"}],
            "timeout": {"hours": 1},
            "on_event": "x",
            "on_timeout": "x",
        },
        {"id": "x", "type": "exit"},
    )
    assert error_of(SEGMENT, d).path == "definition.nodes.0.where.0.from_trigger"
    parse({"type": "event", "event": "add_to_cart"}, d)


def test_trigger_errors_name_the_trigger_field() -> None:
    d = definition(send("a"))
    assert (
        error_of({"type": "geofence", "on": "enter", "lat": 95, "lon": 0, "radius_m": 5}, d).path
        == "trigger.lat"
    )
    assert (
        error_of({"type": "schedule", "segment": "s", "at": "2024-01-01T10:00"}, d).path
        == "trigger.at"
    )
    assert (
        error_of({"type": "date", "attribute": "birthday", "at": "25:00"}, d).path == "trigger.at"
    )


def test_references_name_segments_and_templates() -> None:
    journey = parse(
        SEGMENT,
        definition(
            {"id": "c", "type": "condition", "rule": {"segment": "seg_vip"}, "yes": "t", "no": "t"},
            send("t", template_id="tpl_1"),
        ),
    )
    refs = references(journey)
    assert refs.segments == {"seg_1": "trigger.segment", "seg_vip": "definition.nodes.0.rule"}
    assert refs.templates == {"tpl_1": "definition.nodes.1.template_id"}


def test_legacy_steps_become_a_chain_of_sends() -> None:
    legacy_trigger = {"segment_entered": "seg_7"}
    legacy = {
        "steps": [
            {
                "id": "one",
                "send": {"channel": "push", "content": {"body": "1"}, "fallback_channels": ["sms"]},
            },
            {"id": "two", "send": {"channel": "sms", "template_id": "tpl"}},
        ]
    }
    journey = parse(legacy_trigger, legacy)
    assert journey.trigger.type == "segment_entered"
    first, second = journey.definition.nodes
    assert isinstance(first, SendNode) and isinstance(second, SendNode)
    assert (first.next, first.fallback, second.next) == ("two", ["sms"], None)
    assert legacy_form({"type": "event", "event": "x"}, {"nodes": []}) == (
        {"type": "event", "event": "x"},
        {"nodes": []},
    )
