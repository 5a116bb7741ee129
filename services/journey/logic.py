"""Journey rules: which runs a segment change starts, and the send jobs they emit. Pure.

Ids are deterministic: one run per (journey, user, triggering change) and one job per
(run, step), so a replayed SegmentChanged starts nothing new and the dispatcher's
job-id ledger drops the duplicate sends.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from libs.schemas import SegmentChanged, SendJob
from libs.schemas.journeys import JourneyDefinition, SegmentEntered

RUN_NS = uuid.UUID("0b7e3c5a-8f9d-4a8e-b1f2-6d1c9e2a4b30")
JOB_NS = uuid.UUID("5c2f9e71-3a4b-4d6c-8e0f-1a2b3c4d5e6f")


@dataclass(frozen=True, slots=True)
class JourneyConfig:
    id: str
    trigger: SegmentEntered
    definition: JourneyDefinition


def run_id(app_id: str, journey_id: str, user_key: str, change_id: str) -> str:
    return uuid.uuid5(RUN_NS, json.dumps([app_id, journey_id, user_key, change_id])).hex


def job_id(run: str, step_id: str) -> str:
    return uuid.uuid5(JOB_NS, json.dumps([run, step_id])).hex


def triggered(journeys: list[JourneyConfig], change: SegmentChanged) -> list[JourneyConfig]:
    if change.change != "entered":
        return []
    return [j for j in journeys if j.trigger.segment_entered == change.segment_id]


def start(
    journey: JourneyConfig, change: SegmentChanged, at: datetime
) -> tuple[str, list[SendJob]]:
    """The run id and the send jobs of its steps (all immediate in this subset)."""
    run = run_id(change.app_id, journey.id, change.user_key, change.change_id)
    jobs = [
        SendJob(
            app_id=change.app_id,
            job_id=job_id(run, step.id),
            user_key=change.user_key,
            channel=step.send.channel,
            content=step.send.content,
            template_id=step.send.template_id,
            context={"segment_id": change.segment_id},
            transactional=False,
            journey_id=journey.id,
            run_id=run,
            step_id=step.id,
            created_at=at,
            fallback_channels=list(step.send.fallback_channels),
        )
        for step in journey.definition.steps
    ]
    return run, jobs
