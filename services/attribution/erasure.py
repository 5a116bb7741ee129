"""The ``attribution.erasure`` consumer: a user's attribution data leaves Postgres when admin
erases the user (``DELETE /admin/v1/users/{key}``, announced as
``ConfigChanged(entity="user", action="deleted")``).

Whose rows are the user's, for a profile key K:

- K a user id: the installs recorded under K, the devices K's installs and links name,
  and the installs still recorded under those devices' anonymous keys (``d:<device>``:
  installs of the device before the login, not joined yet); the verification of K; the
  links of devices to K;
- K an anonymous key ``d:D``: the installs recorded under K and D's link, whoever it
  names (the link says who D's later installs belong to; the user has asked to be
  forgotten as D);
- for both: the clicks those installs were matched to or named (IP, user agent,
  advertising id), the postback attempts of their attributions (the URLs carry the
  advertising id), and the in-app events held for postback from those devices or of K.

Counted installs disappear with it: a later install of the same device or user is a
new one (the attribution providers' "forget device" does the same). The warehouse's
copies go through ingest's writer (``services/ingest/erasure.py``), the profile through
the segmenter.

An erasure is carried out once (``attribution_erasures``): a redelivered record does
not erase what the user did after it. Locks, in the matcher's global order: the clicks,
the devices, the user — so an install or a login of the user being matched on another
replica waits for the erasure, or the erasure for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.pipeline import Batch
from libs.runtime.postgres import lock_all
from libs.schemas import ConfigChanged
from libs.schemas.base import ANONYMOUS_PREFIX
from libs.schemas.config_changes import is_user_erasure
from services.attribution import identity, store
from services.attribution.metrics import ERASURES

log = logging.getLogger(__name__)

TOPICS = ("config-changes",)


_CLAIM = text(
    "INSERT INTO attribution_erasures (app_id, erasure_id, erased_at) "
    "VALUES (:app_id, :erasure_id, :at) ON CONFLICT DO NOTHING RETURNING erasure_id"
)
# The installs of K (every device), the devices K's installs and links name.
_DEVICES = text(
    "SELECT device_id FROM attribution_installs WHERE app_id = :app_id AND user_key = :key "
    "UNION SELECT device_id FROM attribution_device_links "
    "WHERE app_id = :app_id AND user_id = :key"
)
_INSTALLS = text(
    "SELECT install_event_id, attribution_id, click_id, ref_click_id "
    "FROM attribution_installs WHERE app_id = :app_id AND user_key = ANY(:keys)"
)
_DELETE_INSTALLS = text(
    "DELETE FROM attribution_installs WHERE app_id = :app_id AND user_key = ANY(:keys)"
)
_DELETE_CLICKS = text(
    "DELETE FROM attribution_clicks WHERE app_id = :app_id AND click_id = ANY(:clicks)"
)
_DELETE_ATTEMPTS = text(
    "DELETE FROM attribution_postbacks WHERE app_id = :app_id AND attribution_id = ANY(:ids)"
)
_DELETE_HOLDS = text(
    "DELETE FROM attribution_postback_holds WHERE app_id = :app_id "
    "AND (user_id = :user OR device_id = ANY(:devices))"
)
_DELETE_LINKS = text(
    "DELETE FROM attribution_device_links WHERE app_id = :app_id "
    "AND (user_id = :user OR device_id = ANY(:own_devices))"
)
_DELETE_VERIFICATION = text(
    "DELETE FROM attribution_verifications WHERE app_id = :app_id AND user_id = :user"
)


async def erase(session: AsyncSession, *, app_id: str, user_key: str, erasure_id: str) -> int:
    """Carry out one erasure (see the module docstring); returns the installs deleted, 0 for
    a redelivery. Runs in the caller's transaction."""
    anonymous = user_key.startswith(ANONYMOUS_PREFIX)
    user = None if anonymous else user_key
    params = {"app_id": app_id, "key": user_key}
    devices = {row[0] for row in await session.execute(_DEVICES, params)}
    if anonymous:
        devices.add(user_key.removeprefix(ANONYMOUS_PREFIX))
    keys = sorted({user_key, *(ANONYMOUS_PREFIX + d for d in devices)})
    installs = (await session.execute(_INSTALLS, {"app_id": app_id, "keys": keys})).all()
    clicks = sorted({c for row in installs for c in (row.click_id, row.ref_click_id) if c})
    await lock_all(
        session,
        [
            *(store.click_lock(app_id, c) for c in clicks),
            *(store.device_lock(app_id, d) for d in sorted(devices)),
            *([identity.user_lock(app_id, user)] if user else []),
        ],
    )
    claimed = await session.scalar(
        _CLAIM, {"app_id": app_id, "erasure_id": erasure_id, "at": datetime.now(UTC)}
    )
    if claimed is None:
        return 0
    # Read again under the locks: an install recorded meanwhile is the user's too.
    installs = (await session.execute(_INSTALLS, {"app_id": app_id, "keys": keys})).all()
    clicks = sorted({c for row in installs for c in (row.click_id, row.ref_click_id) if c})
    await session.execute(_DELETE_INSTALLS, {"app_id": app_id, "keys": keys})
    await session.execute(_DELETE_CLICKS, {"app_id": app_id, "clicks": clicks})
    await session.execute(
        _DELETE_ATTEMPTS,
        {"app_id": app_id, "ids": sorted({row.attribution_id for row in installs})},
    )
    all_devices = sorted(devices)
    await session.execute(_DELETE_HOLDS, {"app_id": app_id, "user": user, "devices": all_devices})
    await session.execute(
        _DELETE_LINKS,
        {"app_id": app_id, "user": user, "own_devices": all_devices if anonymous else []},
    )
    if user:
        await session.execute(_DELETE_VERIFICATION, {"app_id": app_id, "user": user})
    ERASURES.inc()
    log.info(
        "attribution.erased",
        extra={"app_id": app_id, "erasure_id": erasure_id, "installs": len(installs)},
    )
    return len(installs)


class Eraser:
    """The batch handler: the batch's erasures, one transaction, in record order."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def __call__(self, batch: Batch) -> None:
        erasures: Sequence[ConfigChanged] = [
            r.value
            for r in batch.records
            if isinstance(r.value, ConfigChanged) and is_user_erasure(r.value)
        ]
        if not erasures:
            return
        async with self._sessions() as session, session.begin():
            for change in erasures:
                await erase(
                    session,
                    app_id=change.app_id,
                    user_key=change.entity_id,
                    erasure_id=change.change_id,
                )
