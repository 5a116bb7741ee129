"""The ``attribution.matcher`` consumer: clicks and installs in, UserAttributed out.

Clicks of a batch are indexed before its installs are matched. An install whose
referrer names a click not yet indexed is recorded organic and upgraded when that click
arrives. Records are published before the Postgres commit; a retry recomputes the same
decisions and ids, so a duplicate publish is harmless downstream.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch
from libs.schemas import ClickRecorded, InstallReported, UserAttributed
from libs.schemas.base import user_key_of
from services.attribution import logic, outcomes, store
from services.attribution.metrics import ATTRIBUTIONS

TOPICS = ("clicks", "installs")
# The longest click-through window a tracker may set (admin caps it at 30 days).
MAX_LOOKBACK = timedelta(days=30)


class Matcher:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], producer: Producer) -> None:
        self._sessions = sessions
        self._producer = producer

    async def __call__(self, batch: Batch) -> None:
        out: list[UserAttributed] = []
        async with self._sessions() as session, session.begin():
            click_records = [r for r in batch.of("clicks") if isinstance(r.value, ClickRecorded)]
            clicks = [r.value for r in click_records]
            for click in sorted(clicks, key=lambda c: (c.app_id, c.click_id)):
                await store.lock_click(session, app_id=click.app_id, click_id=click.click_id)
            await store.record_clicks(session, rows=[_click_row(c) for c in clicks])
            for click_record, click in zip(click_records, clicks, strict=True):
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
                        ),
                        ref_click_id=waiting.ref_click_id,
                        at=click_record.time,
                    )
                    if attributed.method == "click_id":
                        out.append(attributed)
            for record in batch.of("installs"):
                install = record.value
                assert isinstance(install, InstallReported)
                out.append(
                    await self._attribute(
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
                        ),
                        ref_click_id=logic.referrer_click_id(install.referrer),
                        at=record.time,
                    )
                )
            await session.flush()
            await self._producer.publish_all(out)
        for attributed in out:
            ATTRIBUTIONS.labels(attributed.method).inc()

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
    ) -> UserAttributed:
        """Decide and record one install: gather candidate clicks (the referrer's, and
        recent ones with the same advertising id or fingerprint), let ``logic.match``
        choose and ``outcomes.classify`` name the kind. ``at`` is the triggering record's
        Kafka time, so a replay publishes a byte-identical UserAttributed."""
        candidates: list[logic.ClickFacts] = []
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
            candidates.extend(_click_facts(r) for r in rows if r.click_id != ref_click_id)
        windows = await store.tracker_windows(
            session, app_id=app_id, tokens={c.tracker_token for c in candidates}
        )
        decision = logic.match(facts, clicks=candidates, windows=windows)
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
        attribution_id = logic.attribution_id(app_id, event_id, click.click_id if click else None)
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
            "status": decision.status,
            "tracker_token": outcome.tracker_token,
            "click_id": click.click_id if click else None,
            "attributed_at": at,
            "adid": adid,
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
            status=decision.status,
            tracker_token=outcome.tracker_token,
            click_id=values["click_id"],
            click_ts=click.ts if click else None,
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
    }
