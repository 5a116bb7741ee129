"""Segment management rules: rule checks with paths, referrers, goal comparison, CSV."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from libs.rules.language import All, ReachableCond
from libs.runtime.errors import Conflict, InvalidInput
from services.admin import logic, segments

CITY = {"attribute": "city", "op": "eq", "value": "Tehran"}


def test_checked_rule_returns_the_parsed_rule() -> None:
    node = segments.checked_rule({"all": [CITY, {"reachable": "push"}]}, {})
    assert isinstance(node, All)
    assert node.nodes[1] == ReachableCond("push")


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ([CITY], "rule", "a rule node must be a JSON object"),
        ({"all": [CITY, {**CITY, "op": "near"}]}, "rule.all.1.op", "must be one of"),
        (
            {"not": {"event": "$purchase", "count": {"op": "gte", "value": -1}}},
            "rule.not.count.value",
            "must be an integer",
        ),
        ({"any": [{"segment": "seg_missing"}]}, "rule.any.0.segment", "no segment 'seg_missing'"),
    ],
)
def test_checked_rule_names_the_bad_node_and_why(raw: Any, field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as err:
        segments.checked_rule(raw, {"seg_a": CITY})
    assert (err.value.status, err.value.code, err.value.field) == (422, "invalid_rule", field)
    assert reason in err.value.message


def test_checked_rule_rejects_a_reference_back_to_the_segment_being_edited() -> None:
    rules = {"seg_a": CITY, "seg_b": {"segment": "seg_a"}}
    with pytest.raises(InvalidInput) as err:
        segments.checked_rule({"segment": "seg_b"}, rules, segment_id="seg_a")
    assert err.value.field == "rule.segment"
    assert "seg_a -> seg_b -> seg_a" in err.value.message
    # The same rule is fine for another segment.
    segments.checked_rule({"segment": "seg_b"}, rules, segment_id="seg_c")


def test_checked_rule_without_rules_does_not_resolve_references() -> None:
    segments.checked_rule({"segment": "seg_anything"}, None)


def test_referrers_are_segments_and_journeys_naming_the_segment() -> None:
    found = segments.segment_referrers(
        "seg_a",
        segments=[
            ("seg_a", "itself", {"segment": "seg_a"}),
            ("seg_c", "nested", {"not": {"any": [CITY, {"segment": "seg_a"}]}}),
            ("seg_b", "direct", {"segment": "seg_a"}),
            ("seg_d", "other", {"segment": "seg_x"}),
            ("seg_e", "broken", {"segment": "seg_a", "extra": 1}),
        ],
        journeys=[
            (
                "jrn_2",
                "branch",
                {"segment_entered": "seg_x"},
                {"steps": [{"if": {"segment": "seg_a"}}]},
            ),
            ("jrn_1", "trigger", {"segment_entered": "seg_a"}, {"steps": []}),
            ("jrn_3", "unrelated", {"segment_entered": "seg_x"}, {"steps": [{"name": "seg_a"}]}),
        ],
    )
    assert [(r.kind, r.id, r.name) for r in found] == [
        ("journey", "jrn_1", "trigger"),
        ("journey", "jrn_2", "branch"),
        ("segment", "seg_b", "direct"),
        ("segment", "seg_c", "nested"),
    ]


def test_refusal_names_every_referrer() -> None:
    segments.refuse_if_referenced("seg_a", [])
    referrers = [
        segments.Referrer("journey", "jrn_1", "Welcome"),
        segments.Referrer("segment", "seg_b", "VIP"),
    ]
    with pytest.raises(Conflict) as err:
        segments.refuse_if_referenced("seg_a", referrers)
    assert (err.value.status, err.value.code, err.value.field) == (
        409,
        "segment_in_use",
        "segment_id",
    )
    assert "journey jrn_1 (Welcome)" in err.value.message
    assert "segment seg_b (VIP)" in err.value.message


ROWS = [("t_low", 4, 1), ("t_all", 2, 2), ("t_most", 4, 3), ("t_none", 1, 0), ("t_tie", 3, 2)]


def test_tracker_groups_rank_by_matching_then_share() -> None:
    groups = segments.tracker_groups(ROWS, {"t_most": "Influencer A"})
    assert [g["tracker_token"] for g in groups] == ["t_most", "t_all", "t_tie", "t_low", "t_none"]
    first = groups[0]
    assert first == {
        "tracker_token": "t_most",
        "name": "Influencer A",
        "attributed_users": 4,
        "matching": 3,
        "share": 3 / 4,
    }
    assert groups[1]["name"] is None


def test_tracker_groups_rank_by_share_then_matching() -> None:
    groups = segments.tracker_groups(ROWS, {}, rank_by="share")
    assert [g["tracker_token"] for g in groups] == ["t_all", "t_most", "t_tie", "t_low", "t_none"]
    assert [g["share"] for g in groups] == [1.0, 0.75, 2 / 3, 0.25, 0.0]


def test_tracker_groups_break_full_ties_by_token() -> None:
    groups = segments.tracker_groups([("b", 2, 1), ("a", 2, 1)], {})
    assert [g["tracker_token"] for g in groups] == ["a", "b"]


def test_csv_values_write_instants_as_iso() -> None:
    at = datetime(2026, 11, 30, 9, 15, 0, 250000, tzinfo=UTC)
    row = {"user_key": "u1", "entered_at": at, "user_id": None}
    assert segments.csv_values(row) == {
        "user_key": "u1",
        "entered_at": "2026-11-30T09:15:00.250000+00:00",
        "user_id": None,
    }


def test_csv_chunks_after_the_first_have_no_header() -> None:
    rows = [{"a": 1, "b": None}, {"a": "x,y", "b": "تهران"}]
    first = logic.to_csv(rows[:1], ["a", "b"])
    rest = logic.to_csv(rows[1:], ["a", "b"], header=False)
    assert first + rest == logic.to_csv(rows, ["a", "b"])
    assert rest == '"x,y",تهران\n'
    assert logic.to_csv([], ["a", "b"], header=False) == ""
