"""What an attributed install means for the user, and when it is billable. Pure.

Attribution counts users, not devices. Given what is already known about the installing
device and user (a :class:`History` the consumer reads from its ledger), :func:`classify`
names the install's outcome; :func:`reclassify` corrects it when the user becomes known
later; :func:`verification_status` and :func:`is_billable` implement ``on_verification``
trackers and bill-once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.attribution.logic import (
    INACTIVITY,
    VERIFICATION_WINDOW,
    ClickFacts,
    Decision,
    clean_adid,
)

NEW_USER, REINSTALL, NEW_DEVICE, REATTRIBUTION, ORGANIC = (
    "new_user",
    "reinstall",
    "new_device",
    "reattribution",
    "organic",
)
KINDS = (NEW_USER, REINSTALL, NEW_DEVICE, REATTRIBUTION, ORGANIC)
ATTRIBUTED, PENDING, VERIFIED, UNVERIFIED, REJECTED = (
    "attributed",
    "pending",
    "verified",
    "unverified",
    "rejected",
)
ON_INSTALL, ON_VERIFICATION = "on_install", "on_verification"
BILLABLE_KINDS = frozenset({NEW_USER})


@dataclass(frozen=True, slots=True)
class History:
    """What the ledger knew before this install.

    ``adid_seen``: an earlier install of the app carried this advertising id (the same
    physical device). ``user_seen``: the install's ``user_id`` has an earlier install.
    ``user_adids``: advertising ids of that user's earlier installs. ``user_hardware``:
    the hardware (``logic.hardware``) of each of them, None for one whose hardware is not
    known. ``last_active``: the user's (or, anonymous, the device's) last activity.
    ``original_tracker``: the tracker of the user's first attribution, None when that was
    organic.
    """

    adid_seen: bool = False
    user_seen: bool = False
    user_adids: frozenset[str] = frozenset()
    user_hardware: frozenset[str | None] = frozenset()
    last_active: datetime | None = None
    original_tracker: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The install's kind and the tracker it is reported under (None: organic)."""

    kind: str
    tracker_token: str | None


def classify(
    decision: Decision,
    history: History,
    *,
    install_ts: datetime,
    adid: str | None = None,
    hardware: str | None = None,
    inactivity: timedelta = INACTIVITY,
) -> Outcome:
    """The outcome of one install, given its matching ``decision`` and the ``hardware``
    (``logic.hardware``) it ran on:

    - nothing known about device or user → ``new_user`` when matched, else ``organic``;
    - known, matched through a click *newer than* the last activity, and inactive for
      ``inactivity`` or more (inclusive) → ``reattribution`` under the new click's tracker;
    - a known user on another device — an advertising id the user never had (and the
      ledger never saw), or, the advertising id not seen either, hardware none of the
      user's installs had while all of theirs is known (a reinstall keeps its phone's
      model) → ``new_device`` under the user's original tracker;
    - any other known device or user → ``reinstall`` (under the new click's tracker when
      matched). Without an advertising id, a second device of the user's model (or of
      unknown hardware) cannot be told from a reinstall; it counts as ``reinstall``,
      never as a new user.

    Once a device or user is known, no later install is ``new_user``.
    """
    click = decision.click if decision.method != "organic" else None
    tracker = click.tracker_token if click is not None else None
    if not history.adid_seen and not history.user_seen:
        return Outcome(NEW_USER, tracker) if click is not None else Outcome(ORGANIC, None)
    last = history.last_active
    if (
        click is not None
        and last is not None
        and install_ts - last >= inactivity
        and click.ts > last
    ):
        return Outcome(REATTRIBUTION, tracker)
    mine = clean_adid(adid)
    known_adids = {a for a in (clean_adid(x) for x in history.user_adids) if a}
    if history.user_seen and not history.adid_seen:
        if mine is not None and mine not in known_adids:
            return Outcome(NEW_DEVICE, history.original_tracker)
        seen = history.user_hardware
        if hardware is not None and seen and None not in seen and hardware not in seen:
            return Outcome(NEW_DEVICE, history.original_tracker)
    return Outcome(REINSTALL, tracker)


@dataclass(frozen=True, slots=True)
class InstallRecord:
    """One install as the ledger holds it. ``method`` and ``click`` are how it was
    matched (``click``: the touch's tracker and time; None for an organic install);
    ``kind`` and ``tracker_token`` what it is reported as; ``hardware`` what it ran on
    (``logic.hardware``; None: not known)."""

    install_event_id: str
    install_ts: datetime
    kind: str
    tracker_token: str | None
    adid: str | None = None
    method: str = "organic"
    click: ClickFacts | None = None
    hardware: str | None = None


def reclassify(
    record: InstallRecord, earlier: Sequence[InstallRecord], *, inactivity: timedelta = INACTIVITY
) -> Outcome:
    """The corrected outcome of ``record`` once its user is known ($identify,
    verification): ``earlier`` are the user's other counted installs before it, oldest
    first (the first is the user's original attribution).

    Only ``new_user`` and ``organic`` records are corrected — the kinds that assumed an
    unknown user; without ``earlier`` the record is the user's first and stays. Otherwise
    the record is judged by :func:`classify` with the history ``earlier`` makes, so a
    login processed after an install gives the same answer as one processed before it:
    another device of the user (an advertising id the user never had, or hardware none
    of the user's installs had) becomes ``new_device`` under the original tracker — never
    a second new user; the same advertising id, or none on the same or unknown hardware, a
    ``reinstall``; a return through a newer click after ``inactivity``, a
    ``reattribution``. Idempotent.
    """
    if record.kind not in (NEW_USER, ORGANIC) or not earlier:
        return Outcome(record.kind, record.tracker_token)
    mine = clean_adid(record.adid)
    adids = frozenset(a for a in (clean_adid(e.adid) for e in earlier) if a)
    history = History(
        adid_seen=mine is not None and mine in adids,
        user_seen=True,
        user_adids=adids,
        user_hardware=frozenset(e.hardware for e in earlier),
        last_active=max(e.install_ts for e in earlier),
        original_tracker=earlier[0].tracker_token,
    )
    decision = (
        Decision(record.method, NEW_USER, ATTRIBUTED, record.click)
        if record.click is not None and record.method != ORGANIC
        else Decision(ORGANIC, ORGANIC, ATTRIBUTED, None)
    )
    return classify(
        decision,
        history,
        install_ts=record.install_ts,
        adid=record.adid,
        hardware=record.hardware,
        inactivity=inactivity,
    )


def verification_status(
    *,
    mode: str,
    install_ts: datetime,
    verified_at: datetime | None,
    now: datetime,
    window: timedelta = VERIFICATION_WINDOW,
    current: str | None = None,
) -> str:
    """The verification state of an install on a tracker in ``mode``.

    ``on_install`` trackers: always ``attributed``. ``on_verification``: ``verified`` when
    the user's earliest verification is at or before ``install_ts + window`` (a user who
    verified before installing is verified; event time decides, so a verification
    delivered late but made in time still verifies); else ``pending`` until ``now`` passes
    ``install_ts + window`` (the deadline itself is still pending), then ``unverified``.
    ``verified`` is terminal: passing ``current="verified"`` keeps it. Idempotent and
    order-independent in the facts.
    """
    if mode != ON_VERIFICATION:
        return ATTRIBUTED
    deadline = install_ts + window
    if current == VERIFIED or (verified_at is not None and verified_at <= deadline):
        return VERIFIED
    return UNVERIFIED if now > deadline else PENDING


def is_billable(
    *,
    attribution_id: str,
    kind: str,
    status: str,
    tracker_token: str | None,
    billed: Collection[str],
    billable_kinds: Collection[str] = BILLABLE_KINDS,
) -> bool:
    """Whether this attribution should be billed to its tracker. ``billed`` holds the
    attribution ids already billed for this *user* (any device).

    Billable: attributed to a tracker, of a billable kind (default only ``new_user``),
    with status ``attributed`` (on-install trackers) or ``verified``, and the user billed
    for nothing else. Re-asking about the attribution that was billed answers True, so a
    replayed record changes nothing; any other attribution of a billed user is False.
    """
    if billed:
        return attribution_id in billed
    return tracker_token is not None and kind in billable_kinds and status in (ATTRIBUTED, VERIFIED)
