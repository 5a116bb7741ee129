"""The ``attribution.matcher`` consumer: clicks and installs in, UserAttributed out.

Clicks of a batch are indexed before its installs are matched. An install whose
referrer names a click not yet indexed is recorded organic and upgraded when that click
arrives. Records are published before the Postgres commit; a retry recomputes the same
decisions and ids, so a duplicate publish is harmless downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch
from libs.schemas import ClickRecorded, Event, InstallReported, UserAttributed, UserVerified
from libs.schemas.base import ANONYMOUS_PREFIX, user_key_of
from services.attribution import fraud, identity, logic, outcomes, screening, store
from services.attribution.identity import restate
from services.attribution.metrics import ATTRIBUTIONS

TOPICS = ("clicks", "installs", "verifications", "events")
# The longest click-through window a tracker may set (admin caps it at 30 days).
MAX_LOOKBACK = timedelta(days=30)
# Fraud reasons that depend on the matched click: re-judged when a late click upgrades an
# install; the others are carried over from the first judgement.
CLICK_REASONS = frozenset({fraud.CLICK_INJECTION, fraud.CLICK_SPAMMING})


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
        self._configs: dict[str, fraud.FraudConfig] = {}

    async def __call__(self, batch: Batch) -> None:
        out: list[UserAttributed] = []
        self._configs = {}  # re-read once per batch: admin changes apply at the next one
        async with self._sessions() as session, session.begin():
            click_records = [r for r in batch.of("clicks") if isinstance(r.value, ClickRecorded)]
            clicks = [r.value for r in click_records]
            # Every click id the batch touches — its clicks and the clicks its installs
            # name — is locked once, up front, in one global order: two replicas never
            # hold them crosswise (the per-install lock below is then re-entrant).
            named = {(c.app_id, c.click_id) for c in clicks}
            for record in batch.of("installs"):
                if isinstance(record.value, InstallReported):
                    ref = logic.referrer_click_id(record.value.referrer)
                    if ref:
                        named.add((record.value.app_id, ref))
            for app_id, click_id in sorted(named):
                await store.lock_click(session, app_id=app_id, click_id=click_id)
            logins = _logins(batch)
            verifications = sorted(
                (r.value for r in batch.of("verifications") if isinstance(r.value, UserVerified)),
                key=lambda v: (v.app_id, v.user_id, v.ts),
            )
            # Then the users and devices the batch joins or installs on, in one order too:
            # an install and a login of one device on two replicas are serialised, and so
            # are two devices of one user (each reads the other's install as history).
            installs = [
                r.value for r in batch.of("installs") if isinstance(r.value, InstallReported)
            ]
            users = {(login[0], login[1]) for login in logins}
            users |= {(v.app_id, v.user_id) for v in verifications if v.device_id}
            devices = {(login[0], login[2]) for login in logins}
            devices |= {(v.app_id, v.device_id) for v in verifications if v.device_id}
            for install in installs:
                devices.add((install.app_id, install.device_id))
                user = install.user_id or await store.linked_user(
                    session, app_id=install.app_id, device_id=install.device_id
                )
                if user:
                    users.add((install.app_id, user))
            for app_id, user_id in sorted(users):
                await identity.lock_user(session, app_id=app_id, user_id=user_id)
            for app_id, device_id in sorted(devices):
                await store.lock_device(session, app_id=app_id, device_id=device_id)
            await store.record_clicks(session, rows=[_click_row(c) for c in clicks])
            for click_record, click in zip(click_records, clicks, strict=True):
                if click.kind != "click":
                    continue  # an impression never upgrades an install that named a click
                for waiting in await store.installs_waiting_for(
                    session, app_id=click.app_id, click_id=click.click_id
                ):
                    attributed = await self._attribute(
                        session,
                        app_id=waiting.app_id,
                        event_id=waiting.install_event_id,
                        device_id=waiting.device_id,
                        user_key=waiting.user_key,
                        facts=logic.InstallFacts(
                            ts=waiting.install_ts,
                            referrer=f"click_id={waiting.ref_click_id}",
                            adid=waiting.adid,
                            ip=waiting.ip,
                            install_begin_ts=waiting.install_begin_ts,
                        ),
                        ref_click_id=waiting.ref_click_id,
                        at=click_record.time,
                        only_by_click_id=True,
                        carried=[r for r in waiting.fraud_reasons if r not in CLICK_REASONS],
                    )
                    if attributed is not None:
                        out.append(attributed)
            times = {id(r.value): r.time for r in batch.of("verifications")}
            for verified in verifications:
                out.extend(await self._verify(session, verified, times[id(verified)]))
            for record in batch.of("installs"):
                install = record.value
                assert isinstance(install, InstallReported)
                decided = await self._attribute(
                    session,
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
                if decided is not None:
                    out.append(decided)
            # Logins after the installs of the batch, so an install and the login that
            # follows it in one batch are joined.
            for app_id, user_id, device_id, ts, _, at in logins:
                out.extend(
                    await identity.join_user(
                        session,
                        app_id=app_id,
                        device_id=device_id,
                        user_id=user_id,
                        linked_at=ts,
                        at=at,
                    )
                )
            await session.flush()
            await self._producer.publish_all(out)
        for attributed in out:
            ATTRIBUTIONS.labels(attributed.method).inc()

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

    async def _attribute(
        self,
        session: AsyncSession,
        *,
        app_id: str,
        event_id: str,
        device_id: str,
        user_key: str,
        facts: logic.InstallFacts,
        ref_click_id: str | None,
        at: datetime,
        only_by_click_id: bool = False,
        carried: Sequence[str] = (),
    ) -> UserAttributed | None:
        """Decide and record one install: gather candidate clicks (the referrer's, and
        recent ones with the same advertising id or fingerprint), let ``logic.match``
        choose and ``outcomes.classify`` name the kind. ``at`` is the triggering record's
        Kafka time, so a replay publishes a byte-identical UserAttributed.

        ``only_by_click_id``: the late-click upgrade — nothing is written (None) unless
        the named click now wins, so a weaker re-decision never overwrites the ledger;
        ``carried`` are the install's earlier fraud reasons that do not depend on the click.

        Fraud (``fraud.check_install`` with the app's thresholds) turns the decision into
        ``rejected``: stored with its reasons, counted against the matched tracker, never
        attributed. A copy of an install from a request whose signature failed (None
        returned) never overrides what a valid request of the same install reported."""
        if user_key.startswith(ANONYMOUS_PREFIX):
            # The device's user may be known already (a login processed before this
            # install arrived): the install is theirs.
            user_key = (
                await store.linked_user(session, app_id=app_id, device_id=device_id) or user_key
            )
        candidates: list[logic.ClickFacts] = []
        impressions: list[logic.ClickFacts] = []
        if ref_click_id:
            await store.lock_click(session, app_id=app_id, click_id=ref_click_id)
            row = await store.find_click(session, app_id=app_id, click_id=ref_click_id)
            if row is not None:
                candidates.append(_click_facts(row))
        adid = logic.clean_adid(facts.adid)
        fingerprint = logic.fingerprint_key(
            logic.fingerprint(
                facts.ip,
                facts.user_agent,
                platform=facts.platform,
                device_model=facts.device_model,
                os_version=facts.os_version,
            )
        )
        if adid or fingerprint:
            rows = await store.clicks_by(
                session,
                app_id=app_id,
                adid=adid,
                fingerprint=fingerprint,
                since=facts.ts - MAX_LOOKBACK,
                until=facts.ts,
            )
            seen = [r for r in rows if r.click_id != ref_click_id]
            candidates.extend(_click_facts(r) for r in seen if r.kind == "click")
            impressions = [_click_facts(r) for r in seen if r.kind == "impression"]
        windows = await store.tracker_windows(
            session, app_id=app_id, tokens={c.tracker_token for c in [*candidates, *impressions]}
        )
        decision = logic.match(facts, clicks=candidates, impressions=impressions, windows=windows)
        if only_by_click_id and decision.method != "click_id":
            return None
        recorded = await store.find_install(session, app_id=app_id, install_event_id=event_id)
        if (
            facts.signature not in (None, "ok")
            and recorded is not None
            and recorded.status != "rejected"
        ):
            return None
        reasons = await screening.fraud_reasons(
            session,
            configs=self._configs,
            datacenter=self._datacenter,
            app_id=app_id,
            event_id=event_id,
            facts=facts,
            decision=decision,
        )
        found = {*reasons, *carried}
        decision = logic.reject(decision, [r for r in fraud.REASONS if r in found])
        past = await store.history(
            session,
            app_id=app_id,
            install_event_id=event_id,
            adid=adid,
            user_key=user_key,
            before=facts.ts,
        )
        outcome = outcomes.classify(decision, past, install_ts=facts.ts, adid=adid)
        click = decision.click
        tracker = (
            await store.tracker(session, app_id=app_id, token=outcome.tracker_token)
            if outcome.tracker_token
            else None
        )
        status = decision.status
        if status == "attributed" and tracker is not None:
            # A tracker counting on verification holds the install pending until the
            # app's backend verifies the user (scenario 10).
            status = outcomes.verification_status(
                mode=tracker.counting,
                install_ts=facts.ts,
                verified_at=await store.verified_at(
                    session, app_id=app_id, user_key=user_key, device_id=device_id
                ),
                now=at,
            )
        attribution_id = logic.attribution_id(app_id, event_id, click.click_id if click else None)
        if (
            recorded is not None
            and recorded.attribution_id == attribution_id
            and recorded.status in ("verified", "unverified")
        ):
            status = recorded.status  # settled: a replayed install does not reopen it
        fraud_reasons = list(decision.reasons) if status == "rejected" else []
        # Never stamp a statement older than the one it replaces (see identity.restate).
        stamp = max(at, recorded.attributed_at) if recorded is not None else at
        values: dict[str, Any] = {
            "app_id": app_id,
            "install_event_id": event_id,
            "device_id": device_id,
            "user_key": user_key,
            "install_ts": facts.ts,
            "ref_click_id": ref_click_id,
            "attribution_id": attribution_id,
            "method": decision.method,
            "kind": outcome.kind,
            "status": status,
            "tracker_token": outcome.tracker_token,
            "click_id": click.click_id if click else None,
            "attributed_at": stamp,
            "adid": adid,
            "ip": facts.ip,
            "install_begin_ts": facts.install_begin_ts,
            "fraud_reasons": fraud_reasons,
        }
        await store.save_install(session, values=values)
        return UserAttributed(
            app_id=app_id,
            attribution_id=attribution_id,
            user_key=user_key,
            device_id=device_id,
            install_event_id=event_id,
            install_ts=facts.ts,
            attributed_at=stamp,
            method=decision.method,
            kind=outcome.kind,
            status=status,
            tracker_token=outcome.tracker_token,
            click_id=values["click_id"],
            click_ts=click.ts if click else None,
            network=tracker.network if tracker else None,
            campaign=tracker.campaign if tracker else None,
            adgroup=tracker.adgroup if tracker else None,
            creative=tracker.creative if tracker else None,
            channel=tracker.channel if tracker else None,
            fraud_reasons=fraud_reasons,
        )


def _logins(batch: Batch) -> list[tuple[str, str, str, datetime, str, datetime]]:
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


def _click_facts(row: store.Click) -> logic.ClickFacts:
    return logic.ClickFacts(
        click_id=row.click_id,
        tracker_token=row.tracker_token,
        ts=row.ts,
        adid=row.adid,
        ip=row.ip,
        user_agent=row.user_agent,
        is_bot=row.is_bot,
    )


def _click_row(click: ClickRecorded) -> dict[str, Any]:
    return {
        "app_id": click.app_id,
        "click_id": click.click_id,
        "tracker_token": click.tracker_token,
        "ts": click.ts,
        "ip": click.ip,
        "adid": click.adid,
        "is_bot": click.is_bot,
        "expires_at": click.ts + logic.CLICK_WINDOW,
        "user_agent": click.user_agent,
        "fingerprint": logic.fingerprint_key(logic.fingerprint(click.ip, click.user_agent)),
        "kind": click.kind,
    }
