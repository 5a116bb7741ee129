"""The ``attribution.matcher`` consumer: clicks and installs in, UserAttributed out.

Clicks of a batch are indexed before its installs are matched. An install whose
referrer names a click not yet indexed is recorded organic and upgraded when that click
arrives. Records are published before the Postgres commit; a retry recomputes the same
decisions and ids, so a duplicate publish is harmless downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch
from libs.runtime.signing import Verdict
from libs.schemas import ClickRecorded, InstallReported, UserAttributed, UserVerified
from libs.schemas.base import user_key_of
from services.attribution import fraud, logic, outcomes, store
from services.attribution.metrics import ATTRIBUTIONS

TOPICS = ("clicks", "installs", "verifications")
# The longest click-through window a tracker may set (admin caps it at 30 days).
MAX_LOOKBACK = timedelta(days=30)
CLICK_METHODS = frozenset({"click_id", "adid", "fingerprint"})
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
            for record in batch.of("verifications"):
                verified = record.value
                assert isinstance(verified, UserVerified)
                out.extend(await self._verify(session, verified, record.time))
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
            await session.flush()
            await self._producer.publish_all(out)
        for attributed in out:
            ATTRIBUTIONS.labels(attributed.method).inc()

    async def _verify(
        self, session: AsyncSession, verified: UserVerified, at: datetime
    ) -> list[UserAttributed]:
        """Record the verification and settle the installs that waited for it."""
        await store.record_verification(
            session,
            app_id=verified.app_id,
            user_id=verified.user_id,
            device_id=verified.device_id,
            at=verified.ts,
        )
        out = []
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
        reasons = await self._fraud(
            session, app_id=app_id, event_id=event_id, facts=facts, decision=decision
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
            "attributed_at": at,
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
            attributed_at=at,
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

    async def _fraud(
        self,
        session: AsyncSession,
        *,
        app_id: str,
        event_id: str,
        facts: logic.InstallFacts,
        decision: logic.Decision,
    ) -> list[str]:
        """The install's fraud reasons under the app's thresholds. Per-IP counts use only
        public addresses (``fraud.countable_ip``). An install no SDK signature check saw
        (a server-to-server ``$install``, a backend publishing to ``installs``) is not
        held to the app's signing requirement: its sender authenticated otherwise."""
        config = self._configs.get(app_id)
        if config is None:
            stored, signed = await store.app_fraud_settings(session, app_id=app_id)
            config = self._configs[app_id] = fraud.config_from(stored, require_signature=signed)
        if facts.signature is None and config.require_signature:
            config = replace(config, require_signature=False)
        click = decision.click if decision.method in CLICK_METHODS else None
        clicks_per_hour = 0
        if click is not None:
            clicks_per_hour = await store.clicks_in_hour(
                session,
                app_id=app_id,
                tracker_token=click.tracker_token,
                ip=click.ip if fraud.countable_ip(click.ip) else None,
                adid=logic.clean_adid(click.adid),
                until=click.ts,
            )
        from_ip = 0
        if fraud.countable_ip(facts.ip):
            assert facts.ip is not None
            from_ip = await store.installs_from_ip(
                session, app_id=app_id, ip=facts.ip, install_event_id=event_id, until=facts.ts
            )
        signals = fraud.InstallSignals(
            install_ts=facts.ts,
            ip=facts.ip,
            user_agent=facts.user_agent,
            click_ts=click.ts if click is not None else None,
            install_begin_ts=facts.install_begin_ts,
            clicks_per_hour=clicks_per_hour,
            installs_from_ip_last_hour=from_ip,
            is_emulator=facts.is_emulator,
            is_rooted=facts.is_rooted,
            signature=Verdict(facts.signature) if facts.signature else None,
        )
        return fraud.check_install(signals, config, datacenter=self._datacenter)


async def restate(
    session: AsyncSession,
    row: store.Install,
    status: str,
    at: datetime,
    user_id: str | None = None,
) -> UserAttributed:
    """Change a recorded install's status and say so (same attribution id: the newest
    statement of an attribution replaces the older one downstream)."""
    row.status = status
    tracker = (
        await store.tracker(session, app_id=row.app_id, token=row.tracker_token)
        if row.tracker_token
        else None
    )
    return UserAttributed(
        app_id=row.app_id,
        attribution_id=row.attribution_id,
        user_key=row.user_key,
        device_id=row.device_id,
        user_id=user_id,
        install_event_id=row.install_event_id,
        install_ts=row.install_ts,
        attributed_at=at,
        method=row.method,
        kind=row.kind,
        status=status,
        tracker_token=row.tracker_token,
        click_id=row.click_id,
        network=tracker.network if tracker else None,
        campaign=tracker.campaign if tracker else None,
        adgroup=tracker.adgroup if tracker else None,
        creative=tracker.creative if tracker else None,
        channel=tracker.channel if tracker else None,
    )


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
