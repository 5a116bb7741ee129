"""Deciding a batch's installs set-wise: everything they need is read in a handful of
statements for the whole batch (``prefetch``), each install is then decided in order by
the pure rules (``logic.match``, ``outcomes.classify``, ``fraud.check_install``) over an
in-memory view of the ledger (``BatchLedger``) that shows it the installs decided before
it; the ledger is then written with one upsert (``save``).

The decisions are those of deciding the installs one at a time, each reading the ledger
as the ones before it left it: the reads that depend on the batch's own installs
(history, device-farm counts, the recorded row) leave those installs out in SQL and take
them from the ledger view; the others (clicks, trackers, verifications, device links)
are not changed by deciding installs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from libs.schemas import UserAttributed
from libs.schemas.base import ANONYMOUS_PREFIX
from services.attribution import fraud, logic, outcomes, prefetch, screening, store
from services.attribution.ledger import BatchLedger, Key, UserInstall

# The longest click-through window a tracker may set (admin caps it at 30 days).
MAX_LOOKBACK = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Job:
    """One install to decide. ``at`` is the triggering record's Kafka time, so a replay
    publishes a byte-identical UserAttributed.

    ``only_by_click_id``: the late-click upgrade — nothing is written unless the named
    click now wins, so a weaker re-decision never overwrites the ledger; ``carried`` are
    the install's earlier fraud reasons that do not depend on the click."""

    app_id: str
    event_id: str
    device_id: str
    user_key: str
    facts: logic.InstallFacts
    ref_click_id: str | None
    at: datetime
    only_by_click_id: bool = False
    carried: tuple[str, ...] = ()


@dataclass(slots=True)
class _Read:
    """What one job's decision needs that the rest of the ledger, the clicks index and
    the configuration say (none of it changed by the batch's own decisions)."""

    user_key: str
    adid: str | None
    decision: logic.Decision
    clicks_per_hour: int = 0
    ip_hour: prefetch.IpHour | None = None  # the device-farm count's key (public IPs)
    verified_at: datetime | None = None


@dataclass(slots=True)
class _Shared:
    recorded: dict[Key, dict[str, Any]]
    adid_first_seen: dict[Key, datetime]
    user_installs: dict[Key, list[UserInstall]]
    trackers: dict[Key, prefetch.TrackerRow]
    installs_per_ip: dict[prefetch.IpHour, int] = field(default_factory=dict)


@dataclass(slots=True)
class Decisions:
    """What deciding a batch step's installs gave: the records to publish, in order, and
    the ledger rows to write (one per install)."""

    published: list[UserAttributed] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


async def decide(
    session: AsyncSession,
    jobs: Sequence[Job],
    *,
    configs: dict[str, fraud.FraudConfig],
    datacenter: fraud.NetworkSet,
    links: Mapping[Key, str] | None = None,
) -> Decisions:
    """Decide ``jobs`` in order, each seeing the ledger as the jobs before it left it (two
    installs of one advertising id: the second is a reinstall), as if each had been
    written before the next was read; the caller writes the rows (``save``) before
    anything else reads the ledger. ``configs`` is the caller's per-batch cache of the
    apps' fraud thresholds; ``links`` the device links of the jobs' anonymous devices
    when the caller has them current (None: read here).

    Fraud (``fraud.check_install`` with the app's thresholds) turns a decision into
    ``rejected``: stored with its reasons, counted against the matched tracker, never
    attributed. A copy of an install from a request whose signature failed never
    overrides what a valid request of the same install reported. A settled status
    (verified, unverified) of the same attribution is kept; a statement is never stamped
    older than the one it replaces. Reads only; never commits."""
    if not jobs:
        return Decisions()
    await session.flush()  # the reads below see what the batch's earlier steps changed
    reads, shared = await _read(session, jobs, configs, links)
    ledger = BatchLedger(shared.recorded)
    decided = Decisions()
    for job, read in zip(jobs, reads, strict=True):
        attributed = _decide(job, read, shared, ledger, configs[job.app_id], datacenter)
        if attributed is not None:
            decided.published.append(attributed)
    decided.rows = ledger.written()
    return decided


async def save(session: AsyncSession, decisions: Decisions) -> None:
    """Write the decided ledger rows with one upsert. Never commits."""
    await store.save_installs(session, rows=decisions.rows)
    # Install objects an earlier step loaded no longer hold what the ledger holds: the
    # next ORM read of them reloads them.
    session.expire_all()


async def _read(
    session: AsyncSession,
    jobs: Sequence[Job],
    configs: dict[str, fraud.FraudConfig],
    links: Mapping[Key, str] | None,
) -> tuple[list[_Read], _Shared]:
    keys = {(j.app_id, j.event_id) for j in jobs}
    if links is None:
        links = await prefetch.linked_users(
            session,
            devices=[
                (j.app_id, j.device_id) for j in jobs if j.user_key.startswith(ANONYMOUS_PREFIX)
            ],
        )
    users, adids, prints = [], [], []
    for job in jobs:
        f = job.facts
        user_key = job.user_key
        if user_key.startswith(ANONYMOUS_PREFIX):
            # The device's user may be known already (a login processed before this
            # install arrived): the install is theirs.
            user_key = links.get((job.app_id, job.device_id)) or user_key
        users.append(user_key)
        adids.append(logic.clean_adid(f.adid))
        fingerprint = logic.fingerprint(
            f.ip,
            f.user_agent,
            platform=f.platform,
            device_model=f.device_model,
            os_version=f.os_version,
        )
        prints.append(logic.fingerprint_key(fingerprint))
    named = await prefetch.clicks(
        session, keys={(j.app_id, j.ref_click_id) for j in jobs if j.ref_click_id}
    )
    searches = [
        (j.app_id, a, p, j.facts.ts) if a or p else None
        for j, a, p in zip(jobs, adids, prints, strict=True)
    ]
    recent = await prefetch.recent_clicks(
        session, searches={s for s in searches if s}, lookback=MAX_LOOKBACK
    )
    shared = _Shared(
        recorded=await prefetch.installs(session, keys=keys),
        adid_first_seen=await prefetch.adids_first_seen(
            session,
            adids={(j.app_id, a) for j, a in zip(jobs, adids, strict=True) if a},
            excluding=keys,
        ),
        user_installs=await prefetch.user_installs(
            session,
            users={
                (j.app_id, u)
                for j, u in zip(jobs, users, strict=True)
                if not u.startswith(ANONYMOUS_PREFIX)
            },
            excluding=keys,
        ),
        trackers={},
    )
    touches = [
        _candidates(job, named, recent.get(search, ()) if search else ())
        for job, search in zip(jobs, searches, strict=True)
    ]
    # Every tracker an outcome can name: a candidate's, or a user's original one (an
    # earlier install of the rest of the ledger, or of the batch — recorded or decided).
    tokens = {
        (j.app_id, c.tracker_token)
        for j, (cs, ims) in zip(jobs, touches, strict=True)
        for c in cs + ims
    }
    tokens |= {
        (app_id, u.tracker_token)
        for (app_id, _), rows in shared.user_installs.items()
        for u in rows
        if u.tracker_token
    }
    tokens |= {
        (a, r["tracker_token"]) for (a, _), r in shared.recorded.items() if r["tracker_token"]
    }
    shared.trackers = await prefetch.trackers(session, keys=tokens)
    windows: dict[str, dict[str, logic.Windows]] = {}
    for (app_id, token), tracker in shared.trackers.items():
        windows.setdefault(app_id, {})[token] = tracker.windows
    reads = [
        _Read(
            user_key=user_key,
            adid=adid,
            decision=logic.match(
                job.facts, clicks=clicks, impressions=impressions, windows=windows.get(job.app_id)
            ),
        )
        for job, user_key, adid, (clicks, impressions) in zip(
            jobs, users, adids, touches, strict=True
        )
    ]
    await _read_fraud_counts(session, jobs, reads, shared, configs, excluding=keys)
    verifying = {
        a for (a, _), t in shared.trackers.items() if t.counting == outcomes.ON_VERIFICATION
    }
    if verifying:
        wanted = {
            (j.app_id, r.user_key, j.device_id): r
            for j, r in zip(jobs, reads, strict=True)
            if j.app_id in verifying
        }
        verified = await prefetch.first_verified(session, keys=wanted.keys())
        for job, read in zip(jobs, reads, strict=True):
            read.verified_at = verified.get((job.app_id, read.user_key, job.device_id))
    return reads, shared


async def _read_fraud_counts(
    session: AsyncSession,
    jobs: Sequence[Job],
    reads: Sequence[_Read],
    shared: _Shared,
    configs: dict[str, fraud.FraudConfig],
    *,
    excluding: Collection[Key],
) -> None:
    await screening.load_configs(session, configs=configs, app_ids={j.app_id for j in jobs})
    click_keys = [
        screening.click_count_key(j.app_id, r.decision) for j, r in zip(jobs, reads, strict=True)
    ]
    counts = await prefetch.clicks_per_hour(session, keys={k for k in click_keys if k})
    for read, key in zip(reads, click_keys, strict=True):
        if key is not None:
            read.clicks_per_hour = counts.get(key, 0)
    for job, read in zip(jobs, reads, strict=True):
        ip = job.facts.ip
        if ip is not None and fraud.countable_ip(ip):
            read.ip_hour = (job.app_id, ip, job.facts.ts)
    shared.installs_per_ip = await prefetch.installs_per_ip(
        session, keys={r.ip_hour for r in reads if r.ip_hour}, excluding=excluding
    )


def _candidates(
    job: Job, named: dict[Key, prefetch.Touch], recent: Sequence[prefetch.Touch]
) -> tuple[list[logic.ClickFacts], list[logic.ClickFacts]]:
    """The clicks and impressions ``logic.match`` chooses from for a job: the click its
    referrer names (whatever its kind), then the recent ones with its advertising id or
    fingerprint."""
    clicks: list[logic.ClickFacts] = []
    impressions: list[logic.ClickFacts] = []
    touch = named.get((job.app_id, job.ref_click_id)) if job.ref_click_id else None
    if touch is not None:
        clicks.append(touch.click)
    for t in recent:
        if t.click.click_id != job.ref_click_id:
            (clicks if t.kind == "click" else impressions).append(t.click)
    return clicks, impressions


def _decide(
    job: Job,
    read: _Read,
    shared: _Shared,
    ledger: BatchLedger,
    config: fraud.FraudConfig,
    datacenter: fraud.NetworkSet,
) -> UserAttributed | None:
    """Decide one install over the batch's ledger view and record the row in it; None
    when nothing is to be written (see ``Job`` and ``attribute``)."""
    app_id, event_id, facts, at = job.app_id, job.event_id, job.facts, job.at
    decision = read.decision
    if job.only_by_click_id and decision.method != "click_id":
        return None
    recorded = ledger.get(app_id, event_id)
    if (
        facts.signature not in (None, "ok")
        and recorded is not None
        and recorded["status"] != outcomes.REJECTED
    ):
        return None
    from_ip = 0
    if read.ip_hour is not None:
        assert facts.ip is not None
        from_ip = (
            1
            + shared.installs_per_ip.get(read.ip_hour, 0)
            + ledger.installs_from_ip(
                app_id=app_id,
                ip=facts.ip,
                install_event_id=event_id,
                since=facts.ts - prefetch.COUNT_WINDOW,
                until=facts.ts,
            )
        )
    reasons = screening.fraud_reasons(
        config=config,
        datacenter=datacenter,
        facts=facts,
        decision=decision,
        clicks_per_hour=read.clicks_per_hour,
        installs_from_ip=from_ip,
    )
    found = {*reasons, *job.carried}
    decision = logic.reject(decision, [r for r in fraud.REASONS if r in found])
    user_key, adid = read.user_key, read.adid
    past = ledger.history(
        app_id=app_id,
        install_event_id=event_id,
        adid=adid,
        user_key=user_key,
        before=facts.ts,
        adid_first_seen=shared.adid_first_seen.get((app_id, adid)) if adid else None,
        user_installs=shared.user_installs.get((app_id, user_key), ()),
    )
    # A late-click upgrade knows the install by its ledger row, which keeps the hardware.
    hardware = logic.hardware(facts.platform, facts.device_model, facts.user_agent) or (
        recorded["hardware"] if recorded is not None else None
    )
    outcome = outcomes.classify(decision, past, install_ts=facts.ts, adid=adid, hardware=hardware)
    click = decision.click
    token = outcome.tracker_token
    tracker = shared.trackers.get((app_id, token)) if token else None
    status = decision.status
    if status == outcomes.ATTRIBUTED and tracker is not None:
        # A tracker counting on verification holds the install pending until the
        # app's backend verifies the user (scenario 10).
        status = outcomes.verification_status(
            mode=tracker.counting, install_ts=facts.ts, verified_at=read.verified_at, now=at
        )
    attribution_id = logic.attribution_id(app_id, event_id, click.click_id if click else None)
    if (
        recorded is not None
        and recorded["attribution_id"] == attribution_id
        and recorded["status"] in (outcomes.VERIFIED, outcomes.UNVERIFIED)
    ):
        status = recorded["status"]  # settled: a replayed install does not reopen it
    fraud_reasons = list(decision.reasons) if status == outcomes.REJECTED else []
    # Never stamp a statement older than the one it replaces (see identity.restate).
    stamp = max(at, recorded["attributed_at"]) if recorded is not None else at
    ledger.write(
        {
            "app_id": app_id,
            "install_event_id": event_id,
            "device_id": job.device_id,
            "user_key": user_key,
            "install_ts": facts.ts,
            "ref_click_id": job.ref_click_id,
            "attribution_id": attribution_id,
            "method": decision.method,
            "kind": outcome.kind,
            "status": status,
            "tracker_token": token,
            "click_id": click.click_id if click else None,
            "attributed_at": stamp,
            "adid": adid,
            "hardware": hardware,
            "ip": facts.ip,
            "install_begin_ts": facts.install_begin_ts,
            "fraud_reasons": fraud_reasons,
        }
    )
    return UserAttributed(
        app_id=app_id,
        attribution_id=attribution_id,
        user_key=user_key,
        device_id=job.device_id,
        install_event_id=event_id,
        install_ts=facts.ts,
        attributed_at=stamp,
        method=decision.method,
        kind=outcome.kind,
        status=status,
        tracker_token=token,
        click_id=click.click_id if click else None,
        click_ts=click.ts if click else None,
        network=tracker.network if tracker else None,
        campaign=tracker.campaign if tracker else None,
        adgroup=tracker.adgroup if tracker else None,
        creative=tracker.creative if tracker else None,
        channel=tracker.channel if tracker else None,
        fraud_reasons=fraud_reasons,
    )
