"""SDK request signatures: HMAC-SHA256 over body and timestamp with the app's SDK secret.

Pure: the clock (``now``) and the replay memory (``seen``) are parameters; the caller
stores :attr:`Verdict.replay_key` after an accepted request and keeps it at least
``2 * skew`` (a signature stays acceptable for that long).

Wire format, what an SDK implements::

    timestamp = decimal Unix seconds, ASCII digits only         e.g. "1714552480"
    message   = body_bytes + b"." + timestamp                   (body exactly as sent)
    signature = lower-case hex HMAC-SHA256(secret, message)     64 characters

The timestamp has no ``.``, so the split is unambiguous however the body ends.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SKEW = timedelta(minutes=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP_DIGITS = 12
OK, MISSING, MALFORMED, STALE, BAD_SIGNATURE, REPLAY = (
    "ok",
    "missing",
    "malformed",
    "stale",
    "bad_signature",
    "replay",
)
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Verdict:
    """``code`` is one of ok | missing | malformed | stale | bad_signature | replay.
    ``replay_key`` (set only when ok) is what the caller adds to its seen set."""

    code: str
    replay_key: str | None = None

    @property
    def ok(self) -> bool:
        return self.code == OK


def _as_bytes(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: bytes | str, body: bytes, timestamp: int | str) -> str:
    """The signature an SDK sends for ``body`` at ``timestamp`` (Unix seconds)."""
    message = body + b"." + str(timestamp).encode("ascii")
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def verify(
    *,
    secrets: bytes | str | Sequence[bytes | str],
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now: datetime,
    seen: Collection[str] = frozenset(),
    skew: timedelta = SKEW,
) -> Verdict:
    """Check one signed request; never raises on any header value.

    ``now`` must be timezone-aware. ``secrets`` is the app's SDK secret, or several
    during a rotation (any may sign). Order of checks: missing header → malformed →
    timestamp farther than ``skew`` from ``now`` (``|now - ts| <= skew`` passes: the
    bound is inclusive) → signature mismatch (constant-time) → replay (``seen`` holds the
    keys of accepted requests). Replay is checked last so garbage cannot be used to probe
    or fill the seen set.
    """
    if not timestamp or not signature:
        return Verdict(MISSING)
    ts_text, sig = timestamp.strip(), signature.strip().lower()
    if not (
        0 < len(ts_text) <= MAX_TIMESTAMP_DIGITS
        and ts_text.isascii()
        and ts_text.isdigit()
        and len(sig) == 64
        and set(sig) <= _HEX
    ):
        return Verdict(MALFORMED)
    # Compared as durations since the epoch: a 12-digit timestamp is past year 9999.
    if abs(now - EPOCH - timedelta(seconds=int(ts_text))) > skew:
        return Verdict(STALE)
    keys = [secrets] if isinstance(secrets, bytes | str) else list(secrets)
    if not any(hmac.compare_digest(sign(k, body, ts_text), sig) for k in keys if k):
        return Verdict(BAD_SIGNATURE)
    if sig in seen:
        return Verdict(REPLAY)
    return Verdict(OK, replay_key=sig)
