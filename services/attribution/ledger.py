"""The install ledger as one batch sees it while it decides, in memory. Pure.

The batch reads the rest of the ledger once, before deciding (``prefetch``, leaving out
its own install events); this holds the rows of its own install events — as stored when
the batch began, then as the batch decided them, one after another — and answers, for
the install being decided, what the per-install ledger queries answered: each install
sees the installs decided before it in the batch exactly as if they had been written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from libs.schemas.base import ANONYMOUS_PREFIX
from services.attribution.outcomes import REJECTED, History

Key = tuple[str, str]  # (app id, an id of the app: install event, click, device, user…)
Row = dict[str, Any]  # a ledger row: every column of attribution_installs


class UserInstall(NamedTuple):
    """One counted (not rejected) install of a known user; ``hardware``: what it ran on
    (``logic.hardware``; None: not known)."""

    install_event_id: str
    install_ts: datetime
    adid: str | None
    tracker_token: str | None
    hardware: str | None = None


_INDEXED = ("adid", "user_key", "ip")


class BatchLedger:
    """Rows of the batch's own install events, by (app id, install event id), with
    lookups by advertising id, user key and IP. Not thread-safe; one per batch step."""

    __slots__ = ("_index", "_rows", "_written")

    def __init__(self, recorded: Mapping[Key, Row]) -> None:
        self._rows: dict[Key, Row] = {}
        self._index: dict[tuple[str, str, str], dict[Key, None]] = {}
        self._written: dict[Key, Row] = {}
        for row in recorded.values():
            self._put(row)

    def get(self, app_id: str, install_event_id: str) -> Row | None:
        """The install's row as the batch sees it now, or None."""
        return self._rows.get((app_id, install_event_id))

    def write(self, row: Row) -> None:
        """Record the batch's decision for an install: later lookups see it, and it is
        among ``written`` (a second decision of the same install replaces the first)."""
        self._put(row)
        self._written[(row["app_id"], row["install_event_id"])] = row

    def written(self) -> list[Row]:
        """The rows the batch decided, one per install, in the order first decided."""
        return list(self._written.values())

    def _put(self, row: Row) -> None:
        key = (row["app_id"], row["install_event_id"])
        old = self._rows.get(key)
        if old is not None:
            for field in _INDEXED:
                if old[field] is not None:
                    self._index[(field, key[0], old[field])].pop(key, None)
        self._rows[key] = row
        for field in _INDEXED:
            if row[field] is not None:
                self._index.setdefault((field, key[0], row[field]), {})[key] = None

    def _counted(self, field: str, app_id: str, value: str, install_event_id: str) -> list[Row]:
        """Counted (not rejected) rows with ``field == value``, other than the install's."""
        keys = self._index.get((field, app_id, value))
        if not keys:
            return []  # the usual case: no other install of the batch with the value
        rows = self._rows
        return [
            row
            for key in keys
            if (row := rows[key])["status"] != REJECTED and key[1] != install_event_id
        ]

    def installs_from_ip(
        self, *, app_id: str, ip: str, install_event_id: str, since: datetime, until: datetime
    ) -> int:
        """The batch's counted installs from ``ip`` in (since, until], other than this one."""
        return sum(
            1
            for row in self._counted("ip", app_id, ip, install_event_id)
            if since < row["install_ts"] <= until
        )

    def history(
        self,
        *,
        app_id: str,
        install_event_id: str,
        adid: str | None,
        user_key: str,
        before: datetime,
        adid_first_seen: datetime | None,
        user_installs: Sequence[UserInstall],
    ) -> History:
        """What earlier installs say about this device and user — the rest of the ledger
        (``adid_first_seen``: the earliest counted install with the advertising id;
        ``user_installs``: the user's counted installs, oldest first) with the batch's
        rows. Rejected installs say nothing: they were never counted."""
        adid_seen = False
        if adid is not None:
            adid_seen = (adid_first_seen is not None and adid_first_seen <= before) or any(
                row["install_ts"] <= before
                for row in self._counted("adid", app_id, adid, install_event_id)
            )
        earlier: list[UserInstall] = []
        if not user_key.startswith(ANONYMOUS_PREFIX):
            earlier = [u for u in user_installs if u.install_ts <= before]
            mine = [
                UserInstall(
                    row["install_event_id"],
                    row["install_ts"],
                    row["adid"],
                    row["tracker_token"],
                    row["hardware"],
                )
                for row in self._counted("user_key", app_id, user_key, install_event_id)
                if row["install_ts"] <= before
            ]
            if mine:
                earlier = sorted(
                    [*earlier, *mine], key=lambda u: (u.install_ts, u.install_event_id)
                )
        return History(
            adid_seen=adid_seen,
            user_seen=bool(earlier),
            user_adids=frozenset(u.adid for u in earlier if u.adid),
            user_hardware=frozenset(u.hardware for u in earlier),
            last_active=max((u.install_ts for u in earlier), default=None),
            original_tracker=earlier[0].tracker_token if earlier else None,
        )
