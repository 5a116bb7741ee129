"""The ``attribution.postbacks`` consumer: tell ad networks about the installs they
brought and about the chosen in-app events of those users.

Installs (``attributions``): for every attributed (or, on verification trackers,
verified) install with a tracker, each of the tracker's ``postback_urls`` is called with
its macros filled in (``{event}`` is ``install``).

In-app events (``events``; the matcher reads that topic too, in its own group): an event
whose name some tracker of the app chose (``postback_events``) is credited to its
device's (or user's) install from the ledger and posted back, held or dropped as
``postback_rules`` says. Held events are judged again whenever an attribution of their
device or user arrives (the install recorded, verified, restated after a login) and are
dropped after ``postback_rules.HOLD_FOR``.

Calls go through httpx, up to :data:`ATTEMPTS` per URL with exponential backoff, each
waiting for a token of its network's bucket (``rate_per_s``, bursts of ``burst``). The
buckets live in the process: N replicas together call a network up to N times as fast.
Up to ``concurrency`` calls run at once; a batch's install postbacks go out before its
event postbacks. Every attempt is recorded in its own transaction as soon as it ends; a
template already delivered for the attribution and status (installs) or for the event
id (events) is not called again, so replays are free. A network that stays down does
not block the partition: its failures are recorded and the consumer moves on.

Order of effects: the batch's reads, holds and dropped holds commit before any call (no
transaction is held across HTTP); holds posted back are deleted after their calls, so
a crash in between posts them again at the replay, where delivered ones are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.pipeline import Batch, Record
from libs.runtime.ratelimit import TokenBuckets
from libs.runtime.tables import Tracker
from libs.schemas import Event, UserAttributed
from libs.schemas.base import user_key_of
from services.attribution import logic, postback_store, store
from services.attribution import postback_rules as rules
from services.attribution.metrics import POSTBACK_ATTEMPTS

log = logging.getLogger(__name__)

TOPICS = ("attributions", "events")
ATTEMPTS = 3


class NetworkLimiter:
    """Waits before each call until its network's token bucket grants one; ``clock``
    (monotonic seconds) and ``sleep`` are injectable for tests. Never raises."""

    def __init__(
        self,
        buckets: TokenBuckets,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._buckets = buckets
        self._clock = clock
        self._sleep = sleep

    async def wait(self, key: str) -> None:
        while (delay := self._buckets.take(key, 1, now=self._clock())) > 0:
            await self._sleep(delay)


@dataclass(frozen=True, slots=True)
class Call:
    """One postback to make: the template (its identity across replays), the URL it
    became, and whose it is (``event_id`` None: an install's)."""

    app_id: str
    attribution_id: str
    status: str
    event_id: str | None
    template: str
    url: str
    limit_key: str


class Postbacks:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        client: httpx.AsyncClient | None = None,
        rate_per_s: float = 50.0,
        burst: int = 10,
        backoff_s: float = 0.2,
        concurrency: int = 8,
        limiter: NetworkLimiter | None = None,
    ) -> None:
        self._sessions = sessions
        self._client = client or httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        self._limiter = limiter or NetworkLimiter(TokenBuckets(rate_per_s=rate_per_s, burst=burst))
        self._backoff_s = backoff_s
        self._concurrency = concurrency

    async def __call__(self, batch: Batch) -> None:
        install_calls: list[Call] = []
        event_calls: list[Call] = []
        posted: dict[str, set[str]] = defaultdict(set)  # app → held event ids posted back
        trackers = _EventTrackers()
        async with self._sessions() as session, session.begin():
            expired_before = datetime.now(UTC) - rules.HOLD_FOR
            for app_id in sorted({r.value.app_id for r in batch.records}):
                await postback_store.expire_holds(session, app_id=app_id, before=expired_before)
            # Events first, so an attribution later in the batch finds the ones it holds.
            for record in batch.of("events"):
                event_calls.extend(await self._judge(session, record, trackers))
            for record in batch.of("attributions"):
                attributed = record.value
                assert isinstance(attributed, UserAttributed)
                install_calls.extend(await self._install_calls(session, attributed))
                event_calls.extend(await self._flush(session, attributed, trackers, posted))
        await self._run(install_calls)
        await self._run(event_calls)
        if posted:
            async with self._sessions() as session, session.begin():
                for app_id, event_ids in posted.items():
                    await postback_store.release(session, app_id=app_id, event_ids=event_ids)

    # --- planning (inside the batch's transaction) -----------------------------------

    async def _install_calls(self, session: AsyncSession, a: UserAttributed) -> list[Call]:
        if (
            a.status not in rules.POSTBACK_STATUSES
            or a.tracker_token is None
            or a.method == "organic"
        ):
            return []
        tracker = await store.tracker(session, app_id=a.app_id, token=a.tracker_token)
        if tracker is None or not tracker.postback_urls:
            return []
        done = await postback_store.delivered_postbacks(
            session, app_id=a.app_id, attribution_id=a.attribution_id, status=a.status
        )
        install = await store.find_install(
            session, app_id=a.app_id, install_event_id=a.install_event_id
        )
        values = rules.install_values(
            click_id=a.click_id,
            tracker=a.tracker_token,
            network=tracker.network,
            campaign=tracker.campaign,
            adid=install.adid if install else None,
            install_ts=a.install_ts,
            install_event_id=a.install_event_id,
            user_key=a.user_key,
        )
        return [
            _call(a.app_id, a.attribution_id, a.status, None, template, values, tracker)
            for template in tracker.postback_urls
            if template not in done
        ]

    async def _judge(
        self, session: AsyncSession, record: Record, trackers: _EventTrackers
    ) -> list[Call]:
        """Post back, hold or drop one event; only names a tracker of the app chose cost
        more than the (per batch, per app) tracker read."""
        event = record.value
        assert isinstance(event, Event)
        chosen = await trackers.of(session, event.app_id)
        if not any(event.name in t.postback_events for t in chosen.values()):
            return []
        rows = await postback_store.installs_of(
            session, app_id=event.app_id, device_id=event.device_id, user_id=event.user_id
        )
        verdict = rules.event_verdict(
            [_ref(r) for r in rows], name=event.name, at=event.ts, chosen=trackers.names(chosen)
        )
        if verdict.action == rules.HOLD:
            await postback_store.hold(session, rows=[_hold_row(event, record.time)])
            return []
        if verdict.action != rules.SEND or verdict.install is None:
            return []
        facts = rules.EventFacts(
            event_id=event.event_id,
            name=event.name,
            ts=event.ts,
            user_key=event.user_key,
            adid=logic.clean_adid(event.adid),
            revenue=event.revenue,
            currency=event.currency,
        )
        return await self._event_calls(session, event.app_id, facts, verdict.install, chosen)

    async def _flush(
        self,
        session: AsyncSession,
        a: UserAttributed,
        trackers: _EventTrackers,
        posted: dict[str, set[str]],
    ) -> list[Call]:
        """Judge again the events held for the device or user of ``a``, the ledger
        completed with ``a`` itself (published before the matcher's commit, it may be
        ahead of the ledger). Dropped ones are released now; those posted back are
        added to ``posted``, released after their calls."""
        held = await postback_store.held_for(
            session, app_id=a.app_id, device_id=a.device_id, user_key=a.user_key
        )
        if not held:
            return []
        chosen = await trackers.of(session, a.app_id)
        statement = rules.InstallRef(
            install_event_id=a.install_event_id,
            attribution_id=a.attribution_id,
            install_ts=a.install_ts,
            attributed_at=a.attributed_at,
            status=a.status,
            tracker_token=a.tracker_token,
            click_id=a.click_id,
        )
        calls: list[Call] = []
        dropped: list[str] = []
        for h in held:
            rows = await postback_store.installs_of(
                session, app_id=a.app_id, device_id=h.device_id, user_id=h.user_id
            )
            # The statement counts where the ledger read would find its install: among
            # the device's installs, or the user's when the device has none.
            by_user = not any(r.device_id == h.device_id for r in rows)
            installs = [_ref(r) for r in rows]
            if a.device_id == h.device_id:
                own = [_ref(r) for r in rows if r.device_id == h.device_id]
                installs = rules.merge(own, statement)
            elif by_user and a.user_key == h.user_id:
                installs = rules.merge(installs, statement)
            verdict = rules.event_verdict(
                installs, name=h.name, at=h.ts, chosen=trackers.names(chosen)
            )
            if verdict.action == rules.DROP:
                dropped.append(h.event_id)
            elif verdict.action == rules.SEND and verdict.install is not None:
                facts = rules.EventFacts(
                    event_id=h.event_id,
                    name=h.name,
                    ts=h.ts,
                    user_key=user_key_of(h.user_id, h.device_id),
                    adid=h.adid,
                    revenue=h.revenue,
                    currency=h.currency,
                )
                calls.extend(
                    await self._event_calls(session, a.app_id, facts, verdict.install, chosen)
                )
                posted[a.app_id].add(h.event_id)
        await postback_store.release(session, app_id=a.app_id, event_ids=dropped)
        return calls

    async def _event_calls(
        self,
        session: AsyncSession,
        app_id: str,
        event: rules.EventFacts,
        install: rules.InstallRef,
        chosen: dict[str, Tracker],
    ) -> list[Call]:
        tracker = chosen[install.tracker_token or ""]
        templates = rules.event_templates(
            event.name,
            postback_urls=tracker.postback_urls or [],
            postback_events=tracker.postback_events or [],
            event_postback_urls=tracker.event_postback_urls or {},
        )
        done = await postback_store.delivered_event_postbacks(
            session, app_id=app_id, event_ids=[event.event_id]
        )
        values = rules.event_values(
            event,
            install,
            tracker=tracker.token,
            network=tracker.network,
            campaign=tracker.campaign,
        )
        return [
            _call(
                app_id, install.attribution_id, install.status, event.event_id, t, values, tracker
            )
            for t in templates
            if (event.event_id, t) not in done
        ]

    # --- calling (no transaction held) ------------------------------------------------

    async def _run(self, calls: Iterable[Call]) -> None:
        """Make ``calls`` (each postback once, however often it was planned), at most
        ``concurrency`` at a time. A failure to record an attempt (Postgres down) cancels
        the others and is raised as itself, for the runner to classify."""
        unique = list(dict.fromkeys(calls))
        if not unique:
            return
        slots = asyncio.Semaphore(self._concurrency)

        async def one(call: Call) -> None:
            async with slots:
                await self._call(call)

        try:
            async with asyncio.TaskGroup() as group:
                for call in unique:
                    group.create_task(one(call))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None

    async def _call(self, call: Call) -> None:
        """Call until delivered, refused for good, or out of attempts; each attempt is
        recorded in its own transaction as soon as it ends."""
        kind = "install" if call.event_id is None else "event"
        for attempt in range(1, ATTEMPTS + 1):
            await self._limiter.wait(call.limit_key)
            status_code, error, invalid = None, None, False
            try:
                response = await self._client.get(call.url)
                status_code = response.status_code
            except httpx.InvalidURL as exc:
                error, invalid = f"{type(exc).__name__}: {exc}"[:1024], True
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:1024]
            delivered = status_code is not None and 200 <= status_code < 300
            async with self._sessions() as session, session.begin():
                await postback_store.record_postback(
                    session,
                    app_id=call.app_id,
                    attribution_id=call.attribution_id,
                    status=call.status,
                    event_id=call.event_id,
                    url=call.template,
                    attempt=attempt,
                    http_status=status_code,
                    error=error,
                    delivered=delivered,
                    at=datetime.now(UTC),
                )
            settled = rules.call_settled(status_code, invalid_url=invalid)
            outcome = "delivered" if delivered else ("refused" if settled else "failed")
            POSTBACK_ATTEMPTS.labels(kind, outcome).inc()
            if settled:
                return
            if attempt < ATTEMPTS:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
        log.warning(
            "postback not delivered",
            extra={
                "attribution": call.attribution_id,
                "event": call.event_id,
                "limit": call.limit_key,
            },
        )


class _EventTrackers:
    """The batch's cache of each app's trackers that post back events (read once per
    app per batch: admin changes apply from the next batch)."""

    def __init__(self) -> None:
        self._apps: dict[str, dict[str, Tracker]] = {}

    async def of(self, session: AsyncSession, app_id: str) -> dict[str, Tracker]:
        if app_id not in self._apps:
            rows = await postback_store.event_trackers(session, app_id=app_id)
            self._apps[app_id] = {t.token: t for t in rows}
        return self._apps[app_id]

    @staticmethod
    def names(trackers: dict[str, Tracker]) -> dict[str, frozenset[str]]:
        return {token: frozenset(t.postback_events or []) for token, t in trackers.items()}


def _call(
    app_id: str,
    attribution_id: str,
    status: str,
    event_id: str | None,
    template: str,
    values: dict[str, str | None],
    tracker: Tracker,
) -> Call:
    url = rules.postback_url(template, values)
    return Call(
        app_id=app_id,
        attribution_id=attribution_id,
        status=status,
        event_id=event_id,
        template=template,
        url=url,
        limit_key=rules.limit_key(tracker.network, url),
    )


def _ref(row: store.Install) -> rules.InstallRef:
    return rules.InstallRef(
        install_event_id=row.install_event_id,
        attribution_id=row.attribution_id,
        install_ts=row.install_ts,
        attributed_at=row.attributed_at,
        status=row.status,
        tracker_token=row.tracker_token,
        click_id=row.click_id,
        adid=row.adid,
    )


def _hold_row(event: Event, at: datetime) -> dict[str, object]:
    return {
        "app_id": event.app_id,
        "event_id": event.event_id,
        "name": event.name,
        "device_id": event.device_id,
        "user_id": event.user_id,
        "adid": logic.clean_adid(event.adid),
        "ts": event.ts,
        "revenue": event.revenue,
        "currency": event.currency,
        "held_at": at,
    }
