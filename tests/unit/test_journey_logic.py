"""Journey rules: which journeys a segment change starts, and their send jobs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from libs.schemas import MessageContent, SegmentChanged, SendJob
from libs.schemas.journeys import JourneyDefinition, SegmentEntered
from services.journey.logic import (
    JOB_NS,
    RUN_NS,
    JourneyConfig,
    job_id,
    run_id,
    start,
    triggered,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def change(kind: str = "entered", segment: str = "seg_7", **kw: Any) -> SegmentChanged:
    base: dict[str, Any] = dict(
        app_id="digikala",
        change_id="ch_1",
        user_key="u_1001",
        segment_id=segment,
        change=kind,
        ts=NOW,
        cause_event_id="e1",
    )
    base.update(kw)
    return SegmentChanged(**base)


def journey(
    jid: str = "jr_1", segment: str = "seg_7", steps: list[dict[str, Any]] | None = None
) -> JourneyConfig:
    steps = steps or [
        {
            "id": "welcome",
            "send": {
                "channel": "push",
                "content": {
                    "title": "سلام {{ profile.attributes.name | default('دوست') }}",
                    "body": "به دیجی‌کالا خوش آمدید",
                    "data": {"k": "v"},
                },
                "fallback_channels": ["inbox", "sms"],
            },
        },
        {"id": "otp", "send": {"channel": "sms", "template_id": "tpl_welcome"}},
    ]
    return JourneyConfig(
        id=jid,
        trigger=SegmentEntered(segment_entered=segment),
        definition=JourneyDefinition.model_validate({"steps": steps}),
    )


def test_triggered_matches_the_entered_segment() -> None:
    a, b, c = journey("a", "seg_7"), journey("b", "seg_8"), journey("c", "seg_7")
    assert triggered([a, b, c], change(segment="seg_7")) == [a, c]
    assert triggered([a, b, c], change(segment="seg_8")) == [b]
    assert triggered([a, b, c], change(segment="seg_9")) == []


def test_exited_changes_start_nothing() -> None:
    assert triggered([journey()], change("exited")) == []


def test_no_journeys() -> None:
    assert triggered([], change()) == []


def test_start_ids_are_deterministic() -> None:
    run1, jobs1 = start(journey(), change(), NOW)
    run2, jobs2 = start(journey(), change(), datetime(2030, 1, 1, tzinfo=UTC))
    assert run1 == run2
    assert [j.job_id for j in jobs1] == [j.job_id for j in jobs2]


def test_run_id_formula_is_stable() -> None:
    assert run_id("a", "j", "u", "c") == uuid.uuid5(RUN_NS, '["a", "j", "u", "c"]').hex
    assert job_id("r", "s") == uuid.uuid5(JOB_NS, '["r", "s"]').hex


@pytest.mark.parametrize(
    "other",
    [
        {"change_id": "ch_2"},
        {"user_key": "u_2"},
        {"app_id": "snapp"},
    ],
)
def test_run_id_differs_per_change_user_and_app(other: dict[str, Any]) -> None:
    base, _ = start(journey(), change(), NOW)
    assert start(journey(), change(**other), NOW)[0] != base


def test_run_id_differs_per_journey() -> None:
    assert start(journey("a"), change(), NOW)[0] != start(journey("b"), change(), NOW)[0]


def test_one_send_job_per_step() -> None:
    config = journey()
    run, jobs = start(config, change(), NOW)
    assert len(jobs) == 2
    assert all(isinstance(j, SendJob) for j in jobs)
    assert [j.step_id for j in jobs] == ["welcome", "otp"]
    assert [j.job_id for j in jobs] == [job_id(run, "welcome"), job_id(run, "otp")]
    assert len({j.job_id for j in jobs}) == 2
    for j in jobs:
        assert (j.app_id, j.user_key, j.journey_id, j.run_id) == ("digikala", "u_1001", "jr_1", run)
        assert j.created_at == NOW and j.transactional is False
        assert j.context == {"segment_id": "seg_7"}
        assert j.expires_at is None


def test_step_content_and_channels_are_copied() -> None:
    _, (push, sms) = start(journey(), change(), NOW)
    assert push.channel == "push" and push.template_id is None
    assert push.content == MessageContent(
        title="سلام {{ profile.attributes.name | default('دوست') }}",
        body="به دیجی‌کالا خوش آمدید",
        data={"k": "v"},
    )
    assert push.fallback_channels == ["inbox", "sms"]
    assert sms.channel == "sms" and sms.content is None and sms.template_id == "tpl_welcome"
    assert sms.fallback_channels == []


def test_replayed_change_yields_identical_jobs() -> None:
    assert start(journey(), change(), NOW) == start(journey(), change(), NOW)


def test_fifty_steps_fifty_jobs() -> None:
    steps = [
        {"id": f"s{i}", "send": {"channel": "log", "content": {"body": "x"}}} for i in range(50)
    ]
    _, jobs = start(journey(steps=steps), change(), NOW)
    assert [j.step_id for j in jobs] == [f"s{i}" for i in range(50)]
    assert len({j.job_id for j in jobs}) == 50


def test_jobs_round_trip_through_the_contract() -> None:
    from libs.schemas import decode, encode

    _, jobs = start(journey(), change(), NOW)
    for j in jobs:
        assert decode(SendJob, encode(j)) == j
