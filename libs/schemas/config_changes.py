"""Topic `config-changes`: configuration was written, so caches must be invalidated.

Produced by admin. Idempotency key: `change_id`. Keyed by `app_id` so one app's
changes are applied in order.
"""

from __future__ import annotations

from typing import Any, Literal

from libs.schemas.base import Id, TenantContract, UtcDatetime

TOPIC = "config-changes"
KEY_RULE = "app_id"

Entity = Literal["app", "key", "tracker", "segment", "journey", "template", "broadcast"]


class ConfigChanged(TenantContract):
    """An entity row changed in Postgres; consumers re-read it rather than trust a copy."""

    change_id: Id
    entity: Entity
    entity_id: Id
    action: Literal["created", "updated", "deleted"]
    ts: UtcDatetime


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
]
