"""Topic `segment-changes`: a user entered or left a segment, produced by the segmenter.

Idempotency key: `change_id`. Keyed by `app_id:user_key`.

`merged_from` (additive): on an entry decided when a device's anonymous profile was merged
into its user's at login, the anonymous key (`d:<device>`) that was already a member of the
segment — so the user is not new to it: the anonymous key's exit is announced in the same
batch, and a journey the device already went through (a welcome) need not start again.
"""

from __future__ import annotations

from typing import Any, Literal

from libs.schemas.base import Id, TenantContract, UserKey, UtcDatetime

TOPIC = "segment-changes"
KEY_RULE = "app_id:user_key"


class SegmentChanged(TenantContract):
    """A membership transition; `cause_event_id` is the event that triggered it, if any."""

    change_id: Id
    user_key: UserKey
    segment_id: Id
    change: Literal["entered", "exited"]
    ts: UtcDatetime
    cause_event_id: Id | None = None
    merged_from: UserKey | None = None


def key(m: SegmentChanged) -> str:
    """Kafka key: `app_id:user_key`."""
    return f"{m.app_id}:{m.user_key}"


EXAMPLES: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "app_id": "digikala",
        "change_id": "sc_seg7_u1001_1",
        "user_key": "u_1001",
        "segment_id": "seg_7",
        "change": "entered",
        "ts": "2024-05-01T10:15:01.500000Z",
        "cause_event_id": "e_5f0c2d1e-7a44-4b1e-9f3a-2c8d1b6e4a90",
    },
    {
        "schema_version": 1,
        "app_id": "digikala",
        "change_id": "sc_seg_churn_d_dev9_2",
        "user_key": "d:dev_9",
        "segment_id": "seg_کاربران_غیرفعال",
        "change": "exited",
        "ts": "2024-05-03T00:00:00Z",
        "cause_event_id": None,
    },
    {
        "schema_version": 1,
        "app_id": "digikala",
        "change_id": "sc_seg_new_u1002_1",
        "user_key": "u_1002",
        "segment_id": "seg_new_users",
        "change": "entered",
        "ts": "2024-05-03T08:00:00Z",
        "cause_event_id": "e_2b7d9c4e-1f3a-4c8e-9d2b-6a5e4f3c2b1a",
        "merged_from": "d:dev_12",
    },
]
