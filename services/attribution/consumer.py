"""The ``attribution.matcher`` consumer: clicks and installs in, UserAttributed out.

A batch is one transaction, in steps: lock what it touches, index its clicks, upgrade
the installs that named one of those clicks before it arrived, record its
verifications, decide its installs (``batch.decide``: a handful of set-wise reads, then
one decision per install in order; ``batch.save``: one ledger upsert), join the devices
its logins name. An install whose referrer names a click not yet indexed is recorded
organic and upgraded when that click arrives. Records are published before the Postgres
commit; a retry recomputes the same decisions and ids, so a duplicate publish is
harmless downstream.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch, Record
from libs.runtime.postgres import lock_all
from libs.schemas import ClickRecorded, Event, InstallReported, UserAttributed, UserVerified
from libs.schemas.base import ANONYMOUS_PREFIX, user_key_of
from services.attribution import fraud, identity, logic, outcomes, prefetch, store
from services.attribution.batch import Job, decide, save
from services.attribution.identity import restate
from services.attribution.metrics import ATTRIBUTIONS

TOPICS = ("clicks", "installs", "verifications", "events")
# Fraud reasons that depend on the matched click: re-judged when a late click upgrades an
# install; the others are carried over from the first judgement.
CLICK_REASONS = frozenset({fraud.CLICK_INJECTION, fraud.CLICK_SPAMMING})

Login = tuple[str, str, str, datetime, str, datetime]


class Matcher:
    """``datacenter``: the operator's data-centre networks (``fraud.parse_networks``)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        datacenter: fraud.NetworkSet = fraud.EMPTY,
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._datacenter = datacenter

    async def __call__(self, batch: Batch) -> None:
        out: list[UserAttributed] = []
        # Re-read once per batch: admin changes apply at the next one.
        configs: dict[str, fraud.FraudConfig] = {}
        dc = self._datacenter
        clicks = [
            (r.value, r.time) for r in batch.of("clicks") if isinstance(r.value, ClickRecorded)
        ]
        installs = [_install_job(r) for r in batch.of("installs")]
        logins = _logins(batch)
        verifications = sorted(
            (
                (r.value, r.time)
                for r in batch.of("verifications")
                if isinstance(r.value, UserVerified)
            ),
            key=lambda v: (v[0].app_id, v[0].user_id, v[0].ts),
        )
        async with self._sessions() as session, session.begin():
            links = await _lock(
                session, [c for c, _ in clicks], installs, [v for v, _ in verifications], logins
            )
            await store.record_clicks(session, rows=[_click_row(c) for c, _ in clicks])
            upgraded = await decide(
                session, await _upgrades(session, clicks), configs=configs, datacenter=dc
            )
            await save(session, upgraded)
            out += upgraded.published
            for verified, at in verifications:
                out += await self._verify(session, verified, at)
            # Only a verification naming a device links it: else the links read when
            # locking are current.
            relinked = any(v.device_id for v, _ in verifications)
            decided = await decide(
                session,
                installs,
                configs=configs,
                datacenter=dc,
                links=None if relinked else links,
            )
            out += decided.published
            # Everything decided so far is published while its ledger rows are written:
            # records go out before the commit either way. Both finish before a failure
            # of either is raised (the session is not rolled back under a statement).
            for outcome in await asyncio.gather(
                save(session, decided), self._producer.publish_all(out), return_exceptions=True
            ):
                if isinstance(outcome, BaseException):
                    raise outcome
            # Logins after the installs of the batch, so an install and the login that
            # follows it in one batch are joined.
            joined: list[UserAttributed] = []
            for app_id, user_id, device_id, ts, _, at in logins:
                joined += await identity.join_user(
                    session,
                    app_id=app_id,
                    device_id=device_id,
                    user_id=user_id,
                    linked_at=ts,
                    at=at,
                )
            await session.flush()
            if joined:
                await self._producer.publish_all(joined)
            out += joined
        for method, n in Counter(a.method for a in out).items():
            ATTRIBUTIONS.labels(method).inc(n)

    async def _verify(
        self, session: AsyncSession, verified: UserVerified, at: datetime
    ) -> list[UserAttributed]:
        """Record the verification, join the device it names to the user, and settle
        the installs that waited for it."""
        out: list[UserAttributed] = []
        if verified.device_id:
            out = await identity.join_user(
                session,
                app_id=verified.app_id,
                device_id=verified.device_id,
                user_id=verified.user_id,
                linked_at=verified.ts,
                at=at,
            )
        await store.record_verification(
            session,
            app_id=verified.app_id,
            user_id=verified.user_id,
            device_id=verified.device_id,
            at=verified.ts,
        )
        for row in await store.pending_installs(
            session,
            app_id=verified.app_id,
            user_id=verified.user_id,
            device_id=verified.device_id,
        ):
            status = outcomes.verification_status(
                mode="on_verification",
                install_ts=row.install_ts,
                verified_at=verified.ts,
                now=at,
                current=row.status,
            )
            if status != row.status:
                out.append(await restate(session, row, status, at, verified.user_id))
        return out


async def _lock(
    session: AsyncSession,
    clicks: Sequence[ClickRecorded],
    installs: Sequence[Job],
    verifications: Sequence[UserVerified],
    logins: Sequence[Login],
) -> dict[tuple[str, str], str]:
    """Lock, up front and in one global order, what the batch touches: every click id —
    its clicks and the clicks its installs name — then the devices it installs on or
    joins, then the users. Two replicas never hold them crosswise; an install and a
    login of one device on two replicas are serialised, and so are two devices of one
    user (each reads the other's install as history). Returns the links of the installs'
    anonymous devices, read once the devices are held: only a batch holding a device
    links it, so a login committed while this batch waited for the device is seen (read
    before the lock, it was not, and the install stayed anonymous for good); the users
    those links name are locked after."""
    named = {(c.app_id, c.click_id) for c in clicks}
    named |= {(j.app_id, j.ref_click_id) for j in installs if j.ref_click_id}
    users = {(login[0], login[1]) for login in logins}
    users |= {(v.app_id, v.user_id) for v in verifications if v.device_id}
    devices = {(login[0], login[2]) for login in logins}
    devices |= {(v.app_id, v.device_id) for v in verifications if v.device_id}
    devices |= {(j.app_id, j.device_id) for j in installs}
    await lock_all(
        session,
        [
            *(store.click_lock(*k) for k in sorted(named)),
            *(store.device_lock(*k) for k in sorted(devices)),
        ],
    )
    links = await prefetch.linked_users(
        session,
        devices=[
            (j.app_id, j.device_id) for j in installs if j.user_key.startswith(ANONYMOUS_PREFIX)
        ],
    )
    for job in installs:
        if not job.user_key.startswith(ANONYMOUS_PREFIX):
            users.add((job.app_id, job.user_key))
        elif user := links.get((job.app_id, job.device_id)):
            users.add((job.app_id, user))
    await lock_all(session, [identity.user_lock(*k) for k in sorted(users)])
    return links


async def _upgrades(
    session: AsyncSession, clicks: Sequence[tuple[ClickRecorded, datetime]]
) -> list[Job]:
    """The late-click upgrades the batch's clicks trigger: a job per install that named
    one of them (an impression never upgrades) and was attributed otherwise because
    the click came after it, stamped with the click record's time."""
    first: dict[tuple[str, str], datetime] = {}
    for click, at in clicks:
        if click.kind == "click":
            first.setdefault((click.app_id, click.click_id), at)
    waiting = await prefetch.installs_waiting_for(session, clicks=first.keys())
    return [
        Job(
            app_id=row["app_id"],
            event_id=row["install_event_id"],
            device_id=row["device_id"],
            user_key=row["user_key"],
            facts=logic.InstallFacts(
                ts=row["install_ts"],
                referrer=f"click_id={row['ref_click_id']}",
                adid=row["adid"],
                ip=row["ip"],
                install_begin_ts=row["install_begin_ts"],
            ),
            ref_click_id=row["ref_click_id"],
            at=at,
            only_by_click_id=True,
            carried=tuple(r for r in row["fraud_reasons"] if r not in CLICK_REASONS),
        )
        for key, at in first.items()
        for row in waiting.get(key, ())
    ]


def _install_job(record: Record) -> Job:
    install = record.value
    assert isinstance(install, InstallReported)
    return Job(
        app_id=install.app_id,
        event_id=install.event_id,
        device_id=install.device_id,
        user_key=user_key_of(install.user_id, install.device_id),
        facts=logic.InstallFacts(
            ts=install.ts,
            referrer=install.referrer,
            adid=install.adid,
            ip=install.ip,
            user_agent=install.user_agent,
            platform=install.platform,
            device_model=install.device_model,
            os_version=install.os_version,
            install_begin_ts=install.install_begin_ts,
            is_emulator=install.is_emulator,
            is_rooted=install.is_rooted,
            signature=install.signature,
        ),
        ref_click_id=logic.referrer_click_id(install.referrer),
        at=record.time,
    )


def _logins(batch: Batch) -> list[Login]:
    """The batch's ``$identify`` events as (app, user, device, event time, event id,
    record time), sorted — the order their users are locked in."""
    logins = []
    for record in batch.of("events"):
        event = record.value
        if (
            isinstance(event, Event)
            and event.name == "$identify"
            and event.user_id
            and event.device_id
        ):
            logins.append(
                (
                    event.app_id,
                    event.user_id,
                    event.device_id,
                    event.ts,
                    event.event_id,
                    record.time,
                )
            )
    return sorted(logins)


def _click_row(click: ClickRecorded) -> dict[str, Any]:
    return {
        "app_id": click.app_id,
        "click_id": click.click_id,
        "tracker_token": click.tracker_token,
        "ts": click.ts,
        "ip": click.ip,
        "adid": logic.clean_adid(click.adid),  # installs are matched lower-cased
        "is_bot": click.is_bot,
        "expires_at": click.ts + logic.CLICK_WINDOW,
        "user_agent": click.user_agent,
        "fingerprint": logic.fingerprint_key(logic.fingerprint(click.ip, click.user_agent)),
        "kind": click.kind,
    }
