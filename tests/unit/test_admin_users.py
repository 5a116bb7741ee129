"""Profile edits become the segmenter's own event shapes; erasures a ConfigChanged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from libs.rules.profile import ProfileState
from libs.runtime.errors import InvalidInput
from libs.schemas.config_changes import is_user_erasure
from services.admin.users import edit_events, edit_props, erasure
from services.segmenter.logic import apply_event

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_an_edit_becomes_attribute_and_consent_changes() -> None:
    applies = edit_props(
        {
            "set": {"tier": "gold", "نام": "سارا"},
            "unset": ["old", "old"],
            "phone": "+989121234567",
            "email": None,
            "opt_out": ["sms"],
            "opt_in": ["push", "email"],
        }
    )
    assert applies == {
        "attributes": {
            "set": {"tier": "gold", "نام": "سارا", "phone": "+989121234567"},
            "unset": ["old", "email"],
        },
        "opt_out": ["sms"],
        "opt_in": ["push", "email"],
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({}, "set"),
        ({"set": {}, "unset": []}, "set"),
        ({"set": {"a": 1}, "unset": ["b", "a"]}, "unset.1"),
        ({"phone": "+98912", "set": {"phone": "+98913"}}, "phone"),
        ({"set": {"email": 5}}, "set.email"),
        ({"email": None, "set": {"email": "a@b.ir"}}, "email"),
        ({"opt_out": ["sms"], "opt_in": ["push", "sms"]}, "opt_in.1"),
    ],
)
def test_bad_edits_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        edit_props(changes)
    assert caught.value.field == field


def test_edit_events_fold_into_the_profile_without_being_activity() -> None:
    applies = edit_props({"set": {"tier": "gold"}, "email": "a@b.ir", "opt_out": ["sms"]})
    events = edit_events(app_id="app", user_key="u1", applies=applies, edit_id="ed_1", now=NOW)
    assert [(e.name, e.user_id, e.device_id, e.source) for e in events] == [
        ("$attributes", "u1", None, "admin"),
        ("$opt_out", "u1", None, "admin"),
    ]
    assert [e.event_id for e in events] == ["ed_1:attributes", "ed_1:opt_out:sms"]
    state = ProfileState(user_id="u1", events=4, last_seen=NOW)
    for e in events:
        state = apply_event(state, e)
    assert (state.attributes, state.email, state.opt_outs) == (
        {"tier": "gold", "email": "a@b.ir"},
        "a@b.ir",
        ["sms"],
    )
    assert (state.events, state.last_seen) == (4, NOW)


def test_an_anonymous_profile_is_edited_through_its_device() -> None:
    applies = edit_props({"opt_in": ["push"]})
    [event] = edit_events(app_id="app", user_key="d:dev-7", applies=applies, edit_id="e", now=NOW)
    assert (event.device_id, event.user_id, event.user_key) == ("dev-7", None, "d:dev-7")


def test_an_erasure_is_a_user_deletion() -> None:
    record = erasure(app_id="app", user_key="d:" + "x" * 128, erasure_id="er_1", now=NOW)
    assert is_user_erasure(record) and record.entity_id == "d:" + "x" * 128
