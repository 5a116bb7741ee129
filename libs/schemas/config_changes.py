"""Topic `config-changes`: configuration was written, so caches must be invalidated;
and requests to erase a user.

Produced by admin. Idempotency key: `change_id`. Keyed by `app_id` so one app's
changes are applied in order.

`entity="user"` with `action="deleted"` asks for the erasure of the user whose profile
key is `entity_id` (`DELETE /admin/v1/users/{user_key}`; `change_id` is the erasure id):
the segmenter deletes the profile, its devices' aliases, counters and memberships,
attribution its installs, their clicks, device links, verification and postback records,
and ingest's warehouse writer deletes the user's raw rows in ClickHouse.
"""

from __future__ import annotations

from typing import Any, Literal

from libs.schemas.base import Id, TenantContract, UserKey, UtcDatetime

TOPIC = "config-changes"
KEY_RULE = "app_id"

Entity = Literal[
    "app", "key", "tracker", "segment", "journey", "template", "broadcast", "user", "provider"
]


class ConfigChanged(TenantContract):
    """An entity row changed in Postgres; consumers re-read it rather than trust a copy."""

    change_id: Id
    entity: Entity
    # An id, or for entity "user" a profile key (`d:` + a device id: up to 130).
    entity_id: UserKey
    action: Literal["created", "updated", "deleted"]
    ts: UtcDatetime


def is_user_erasure(m: ConfigChanged) -> bool:
    """Whether ``m`` asks for the erasure of user ``m.entity_id``."""
    return m.entity == "user" and m.action == "deleted"


def key(m: ConfigChanged) -> str:
    """Kafka key: `app_id`."""
    return m.app_id


EXAMPLES: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "app_id": "digikala",
        "change_id": "cc_1714556400_tracker_abc123",
        "entity": "tracker",
        "entity_id": "abc123",
        "action": "created",
        "ts": "2024-05-01T09:40:00Z",
    },
    {
        "schema_version": 1,
        "app_id": "digikala",
        "change_id": "cc_1714560000_segment_seg7",
        "entity": "segment",
        "entity_id": "seg_کاربران_وفادار",
        "action": "updated",
        "ts": "2024-05-01T10:40:00Z",
    },
    {
        "schema_version": 1,
        "app_id": "digikala",
        "change_id": "er_5b8f0c7e9d2a4e61",
        "entity": "user",
        "entity_id": "u_1001",
        "action": "deleted",
        "ts": "2024-05-02T08:00:00Z",
    },
]
