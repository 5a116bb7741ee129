"""The journey service's admin routes (admin token): dry runs and stats.

They are served here, not by admin, because they need what journey owns — the engine
(``logic.advance``) and the runs — and services never import each other; admin owns the
journey catalogue (CRUD, validation, lifecycle: ``services/admin/journeys_api.py``).
``hodhod up`` serves both on one port; a deployment routes ``/admin/v1/journeys/{id}/
dry-run`` and ``…/stats`` to the journey service.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from libs.journeys.definition import DefinitionError, WaitForEventNode
from libs.journeys.validate import parse
from libs.runtime.deps import SessionDep
from libs.runtime.errors import InvalidInput, NotFound
from libs.runtime.tenancy import AdminAppDep
from libs.schemas.base import Props
from services.journey import logic, stats, store
from services.journey.apply import Engine
from services.journey.logic import Enter, Wake

router = APIRouter(prefix="/admin/v1", tags=["journeys"])

MAX_DRY_RUN_STEPS = 50


class DryRunEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    props: Props = Field(default_factory=dict)


class DryRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_key: str = Field(min_length=1, max_length=200)
    # The trigger event to start from (an event-triggered journey's properties).
    event: DryRunEvent | None = None


class DryRunStep(BaseModel):
    node_id: str
    type: str
    at: str
    note: str | None = None


class DryRunMessage(BaseModel):
    node_id: str
    at: str
    job_id: str
    channel: str
    fallback_channels: list[str]
    template_id: str | None
    content: dict[str, Any] | None
    context: dict[str, Any]
    variant_id: str | None


class DryRunRead(BaseModel):
    journey_id: str
    version: int
    user_key: str
    profile_found: bool
    # None: the user may enter now; else why not (once, cooldown, max_concurrent).
    entry_refused: str | None
    steps: list[DryRunStep]
    messages: list[DryRunMessage]
    outcome: str


class NodeStatsRead(BaseModel):
    node_id: str
    type: str | None
    entered: int
    waiting: int
    exited: int
    converted: int
    capped: int


class VariantStatsRead(BaseModel):
    variant: str
    runs: int
    converted: int
    rate: float | None
    uplift: float | None
    z: float | None
    p_value: float | None
    baseline: str | None


class StatsRead(BaseModel):
    journey_id: str
    runs: int
    converted: int
    nodes: list[NodeStatsRead]
    variants: list[VariantStatsRead]


def _engine(request: Request) -> Engine:
    engine = getattr(request.app.state, "journey_engine", None)
    if engine is None:
        engine = Engine()
        request.app.state.journey_engine = engine
    return engine


@router.post("/journeys/{journey_id}/dry-run", operation_id="dry_run_journey")
async def dry_run(
    journey_id: str,
    body: DryRunRequest,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
) -> DryRunRead:
    """The path the user would take if they entered now, on the journey's current
    version and their profile as it is: each wait is passed at its end, each
    wait-for-event by its timeout (the event not coming), conditions answered on the
    profile now. Nothing is stored or sent."""
    row = await store.journey_row(session, app_id=app_id, journey_id=journey_id)
    if row is None:
        raise NotFound(f"no journey {journey_id}", field="journey_id")
    try:
        journey = parse(row.trigger, row.definition)
    except DefinitionError as exc:
        raise InvalidInput(exc.reason, field=exc.path) from None
    engine = _engine(request)
    now = request.app.state.resources.clock.now()
    facts = (await engine.facts(session, app_id, [body.user_key], now, conditions=True))[
        body.user_key
    ]
    profile = await store.profiles(session, app_id=app_id, user_keys=[body.user_key])
    history = await store.histories(
        session, app_id=app_id, journey_ids=[journey_id], user_keys=[body.user_key]
    )
    refused = logic.may_enter(
        journey.definition, history.get((journey_id, body.user_key), logic.History()), now
    )
    trigger = (
        logic.trigger_context(body.event.name, "dry-run", body.event.props) if body.event else {}
    )
    run = logic.new_run(
        app_id=app_id,
        journey_id=journey_id,
        version=row.version,
        user_key=body.user_key,
        cause="dry-run",
        now=now,
        trigger=trigger,
    )
    run = replace(run, run_id="dry-run")
    steps: list[DryRunStep] = []
    messages: list[DryRunMessage] = []
    step = logic.advance(run, journey.definition, Enter(), now, facts)
    at = now
    for _ in range(MAX_DRY_RUN_STEPS):
        for node_id in step.entered:
            node = journey.definition.node(node_id)
            note = None
            if node is not None and step.run.node == node_id and step.run.status == "waiting":
                note = f"waits until {step.run.wake_at.isoformat() if step.run.wake_at else '?'}"
                if isinstance(node, WaitForEventNode):
                    note += f" for {node.event} (assumed not to come)"
            steps.append(DryRunStep(node_id=node_id, type=node.type, at=at.isoformat(), note=note))
        for job in step.jobs:
            messages.append(
                DryRunMessage(
                    node_id=job.step_id or "",
                    at=at.isoformat(),
                    job_id=job.job_id,
                    channel=job.channel,
                    fallback_channels=list(job.fallback_channels),
                    template_id=job.template_id,
                    content=job.content.model_dump(mode="json") if job.content else None,
                    context=dict(job.context),
                    variant_id=job.variant_id,
                )
            )
        if step.run.ended or step.run.wake_at is None:
            break
        at = step.run.wake_at
        step = logic.advance(step.run, journey.definition, Wake(), at, facts)
    outcome = step.run.exit_reason or step.run.status
    return DryRunRead(
        journey_id=journey_id,
        version=row.version,
        user_key=body.user_key,
        profile_found=bool(profile),
        entry_refused=refused,
        steps=steps,
        messages=messages,
        outcome=outcome,
    )


@router.get("/journeys/{journey_id}/stats", operation_id="journey_stats")
async def journey_stats(
    journey_id: str, request: Request, app_id: AdminAppDep, session: SessionDep
) -> StatsRead:
    """Per node: entered, waiting, exited, converted, capped; per variant: runs,
    conversions, rate, uplift over the holdout and a two-proportion z-test."""
    row = await store.journey_row(session, app_id=app_id, journey_id=journey_id)
    if row is None:
        raise NotFound(f"no journey {journey_id}", field="journey_id")
    types: dict[str, str] = {}
    order: list[str] = []
    try:
        journey = parse(row.trigger, row.definition)
        order = [n.id for n in journey.definition.nodes]
        types = {n.id: n.type for n in journey.definition.nodes}
    except DefinitionError:
        pass
    entered = await store.node_stats(session, app_id=app_id, journey_id=journey_id)
    runs = await store.run_counts(session, app_id=app_id, journey_id=journey_id)
    nodes = stats.node_stats(order, entered, runs)
    variants = stats.variant_stats(runs)
    return StatsRead(
        journey_id=journey_id,
        runs=sum(c for *_, c in runs),
        converted=sum(c for _, _, s, _, c in runs if s == "converted"),
        nodes=[NodeStatsRead(type=types.get(n.node_id), **asdict(n)) for n in nodes],
        variants=[VariantStatsRead(**asdict(v)) for v in variants],
    )
