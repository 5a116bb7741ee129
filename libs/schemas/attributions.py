"""Topic `attributions`: the attribution decision for an install, produced by attribution.

Idempotency key: `attribution_id`. Keyed by `app_id:user_key`. Attribution counts
users, not devices: `kind` says whether this install is a new user or another device.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from libs.schemas.base import Id, ShortStr, TenantContract, TrackerToken, UserKey, UtcDatetime

TOPIC = "attributions"
KEY_RULE = "app_id:user_key"

AttributionMethod = Literal["click_id", "adid", "fingerprint", "view_through", "organic"]
AttributionKind = Literal["new_user", "reinstall", "new_device", "reattribution", "organic"]
AttributionStatus = Literal["attributed", "pending", "verified", "unverified", "rejected"]


class UserAttributed(TenantContract):
    """Which tracker (if any) gets credit for an install, and how sure we are.

    Tracker fields are None for organic installs; `fraud_reasons` is non-empty when
    `status` is "rejected".
    """

    attribution_id: Id
    user_key: UserKey
    device_id: Id
    user_id: Id | None = None
    install_event_id: Id
    install_ts: UtcDatetime
    attributed_at: UtcDatetime
    method: AttributionMethod
    kind: AttributionKind
    status: AttributionStatus
    tracker_token: TrackerToken | None = None
    click_id: Id | None = None
    click_ts: UtcDatetime | None = None
    network: ShortStr | None = None
    campaign: ShortStr | None = None
    adgroup: ShortStr | None = None
    creative: ShortStr | None = None
    channel: ShortStr | None = None
    fraud_reasons: list[ShortStr] = Field(default_factory=list, max_length=20)


def key(m: UserAttributed) -> str:
    """Kafka key: `app_id:user_key`."""
    return f"{m.app_id}:{m.user_key}"


EXAMPLES: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "app_id": "digikala",
        "attribution_id": "a_i_3e4f5a6b",
        "user_key": "d:dev_8c1f2a7b",
        "device_id": "dev_8c1f2a7b",
        "user_id": None,
        "install_event_id": "i_3e4f5a6b",
        "install_ts": "2024-05-01T08:34:40Z",
        "attributed_at": "2024-05-01T08:34:41.900000Z",
        "method": "click_id",
        "kind": "new_user",
        "status": "pending",
        "tracker_token": "abc123",
        "click_id": "c_01HZX3K9V7Q2M8R4T6Y1B5N0PA",
        "click_ts": "2024-05-01T08:30:12.345000Z",
        "network": "Instagram",
        "campaign": "حراج بهاره",
        "adgroup": "stories",
        "creative": "video-15s",
        "channel": "social",
        "fraud_reasons": [],
    },
    {
        "schema_version": 1,
        "app_id": "snapp_food",
        "attribution_id": "a_i_9a8b7c",
        "user_key": "u_42",
        "device_id": "ios-7F3E2D1C",
        "user_id": "u_42",
        "install_event_id": "i_9a8b7c",
        "install_ts": "2024-05-01T08:30:00Z",
        "attributed_at": "2024-05-01T08:30:03Z",
        "method": "fingerprint",
        "kind": "new_device",
        "status": "rejected",
        "tracker_token": "yektanet-banner",
        "fraud_reasons": ["click_injection", "too_short_click_to_install"],
    },
]
