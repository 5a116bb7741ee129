"""The ``attribution.matcher`` consumer: clicks and installs in, UserAttributed out.

Clicks of a batch are indexed before its installs are matched. An install whose
referrer names a click not yet indexed is recorded organic and upgraded when that click
arrives. Records are published before the Postgres commit; a retry recomputes the same
decisions and ids, so a duplicate publish is harmless downstream.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch
from libs.schemas import ClickRecorded, InstallReported, UserAttributed
from libs.schemas.base import user_key_of
from services.attribution import logic, store
from services.attribution.metrics import ATTRIBUTIONS

TOPICS = ("clicks", "installs")


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
                        install_ts=waiting.install_ts,
                        ref_click_id=waiting.ref_click_id,
                        at=click_record.time,
                    )
                    if attributed.method != "organic":
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
                        install_ts=install.ts,
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
        install_ts: datetime,
        ref_click_id: str | None,
        at: datetime,
    ) -> UserAttributed:
        """Decide and record one install. ``at`` is the triggering record's Kafka time, so
        a replay publishes a byte-identical UserAttributed."""
        click_row = None
        if ref_click_id:
            await store.lock_click(session, app_id=app_id, click_id=ref_click_id)
            click_row = await store.find_click(session, app_id=app_id, click_id=ref_click_id)
        click = (
            logic.ClickFacts(click_row.click_id, click_row.tracker_token, click_row.ts)
            if click_row is not None
            else None
        )
        decision = logic.decide(install_ts=install_ts, click=click)
        tracker = (
            await store.tracker(session, app_id=app_id, token=click.tracker_token)
            if decision.click is not None and click is not None
            else None
        )
        attribution_id = logic.attribution_id(
            app_id, event_id, decision.click.click_id if decision.click else None
        )
        values: dict[str, Any] = {
            "app_id": app_id,
            "install_event_id": event_id,
            "device_id": device_id,
            "user_key": user_key,
            "install_ts": install_ts,
            "ref_click_id": ref_click_id,
            "attribution_id": attribution_id,
            "method": decision.method,
            "kind": decision.kind,
            "status": decision.status,
            "tracker_token": decision.click.tracker_token if decision.click else None,
            "click_id": decision.click.click_id if decision.click else None,
            "attributed_at": at,
        }
        await store.save_install(session, values=values)
        return UserAttributed(
            app_id=app_id,
            attribution_id=attribution_id,
            user_key=user_key,
            device_id=device_id,
            install_event_id=event_id,
            install_ts=install_ts,
            attributed_at=at,
            method=decision.method,
            kind=decision.kind,
            status=decision.status,
            tracker_token=values["tracker_token"],
            click_id=values["click_id"],
            click_ts=decision.click.ts if decision.click else None,
            network=tracker.network if tracker else None,
            campaign=tracker.campaign if tracker else None,
            adgroup=tracker.adgroup if tracker else None,
            creative=tracker.creative if tracker else None,
            channel=tracker.channel if tracker else None,
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
    }
