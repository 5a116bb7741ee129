"""The ``attribution.postbacks`` consumer: tell the ad network about its installs.

For every attributed (or, on verification trackers, verified) install with a tracker,
each of the tracker's postback URLs is called with its macros filled in — through httpx,
with retries and exponential backoff, and at most ``per_network_per_s`` calls a second to
one network. Every attempt is recorded; a URL already delivered for this attribution and
status is not called again (replays are free). A network that stays down does not block
the partition: its failure is recorded and the consumer moves on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.pipeline import Batch
from libs.schemas import UserAttributed
from services.attribution import logic, store

log = logging.getLogger(__name__)

TOPICS = ("attributions",)
POSTBACK_STATUSES = frozenset({"attributed", "verified"})
ATTEMPTS = 3


class NetworkLimiter:
    """At most ``rate`` calls a second per network (spaced, not bursty)."""

    def __init__(self, rate: float) -> None:
        self._gap = 1.0 / rate
        self._next: dict[str, float] = defaultdict(float)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def wait(self, network: str) -> None:
        async with self._locks[network]:
            now = time.monotonic()
            delay = self._next[network] - now
            self._next[network] = max(now, self._next[network]) + self._gap
        if delay > 0:
            await asyncio.sleep(delay)


class Postbacks:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        client: httpx.AsyncClient | None = None,
        per_network_per_s: float = 50.0,
        backoff_s: float = 0.2,
    ) -> None:
        self._sessions = sessions
        self._client = client or httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        self._limiter = NetworkLimiter(per_network_per_s)
        self._backoff_s = backoff_s

    async def __call__(self, batch: Batch) -> None:
        for record in batch.records:
            attributed = record.value
            assert isinstance(attributed, UserAttributed)
            if (
                attributed.status not in POSTBACK_STATUSES
                or attributed.tracker_token is None
                or attributed.method == "organic"
            ):
                continue
            await self._notify(attributed)

    async def _notify(self, a: UserAttributed) -> None:
        # Read what is needed in a short transaction: none is held across HTTP calls.
        async with self._sessions() as session:
            tracker = await store.tracker(session, app_id=a.app_id, token=a.tracker_token or "")
            if tracker is None or not tracker.postback_urls:
                return
            done = await store.delivered_postbacks(
                session, app_id=a.app_id, attribution_id=a.attribution_id, status=a.status
            )
            install = await store.find_install(
                session, app_id=a.app_id, install_event_id=a.install_event_id
            )
            templates = [t for t in tracker.postback_urls if t not in done]
        values = {
            "click_id": a.click_id,
            "tracker": a.tracker_token,
            "network": a.network,
            "campaign": a.campaign,
            "adid": install.adid if install else None,
            "install_ts": a.install_ts.isoformat(),
            "event": "install",
            "revenue": None,
            "currency": None,
            "user_key": a.user_key,
        }
        for template in templates:
            await self._call(
                a,
                template,
                logic.postback_url(template, values),
                network=a.network or a.tracker_token or "",
            )

    async def _call(self, a: UserAttributed, template: str, url: str, *, network: str) -> None:
        """Call until delivered, refused for good, or out of attempts; each attempt is
        recorded in its own transaction as soon as it ends."""
        for attempt in range(1, ATTEMPTS + 1):
            await self._limiter.wait(network)
            status_code, error = None, None
            try:
                response = await self._client.get(url)
                status_code = response.status_code
                delivered = 200 <= status_code < 300
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error, delivered = f"{type(exc).__name__}: {exc}"[:1024], False
            async with self._sessions() as session, session.begin():
                # The template is what identifies "this postback" across replays.
                await store.record_postback(
                    session,
                    app_id=a.app_id,
                    attribution_id=a.attribution_id,
                    status=a.status,
                    url=template,
                    attempt=attempt,
                    http_status=status_code,
                    error=error,
                    delivered=delivered,
                    at=datetime.now(UTC),
                )
            permanent = (
                status_code is not None and 400 <= status_code < 500 and (status_code != 429)
            )
            if delivered or permanent or (isinstance(error, str) and "InvalidURL" in error):
                return  # done, or refused for good: retrying cannot help
            if attempt < ATTEMPTS:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
        log.warning(
            "postback not delivered", extra={"attribution": a.attribution_id, "network": network}
        )
