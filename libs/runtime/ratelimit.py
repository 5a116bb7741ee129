"""Per-key token buckets. Pure: the caller passes the clock.

Used by ingest (per API key: a request costs one token per event it carries) and by
attribution's postbacks (per ad network: one token per call). A bucket holds up to
``burst`` tokens and refills at ``rate_per_s``. The buckets live in the process, so N
replicas together allow up to N times the rate (README, Known limits). Not
thread-safe: one asyncio loop calls ``take`` without awaiting in between.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

# Keys remembered at most; the least recently used is forgotten first (it comes back
# with a full bucket, which only ever errs on the lenient side).
MAX_KEYS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets keyed by an opaque string (the digest of an API key, a network)."""

    def __init__(self, *, rate_per_s: float, burst: int, max_keys: int = MAX_KEYS) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s must be > 0, burst and max_keys ≥ 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, cost: int, *, now: float) -> float:
        """Spend ``cost`` tokens of ``key``'s bucket if it holds them.

        Returns 0.0 when granted; otherwise the seconds until the bucket will hold
        ``cost`` tokens, and nothing is spent (a refused request costs nothing, so a
        client that waits that long gets through). A ``cost`` above ``burst`` is charged
        as ``burst``. ``now`` is a monotonic clock in seconds.
        """
        cost = min(max(cost, 0), self.burst)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_s)
            bucket.updated = now
        # The tolerance absorbs float rounding, so that waiting exactly as told suffices.
        if bucket.tokens + 1e-9 >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate_per_s


def retry_after_seconds(wait: float) -> int:
    """The ``Retry-After`` header value for a wait: whole seconds, rounded up, ≥ 1."""
    return max(1, math.ceil(wait))
