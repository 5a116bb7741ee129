"""Topic `verifications`: server-side proof that a user is real (e.g. OTP passed).

Produced by ingest (S2S) and other backends. Idempotency key: `verification_id`.
Keyed by `app_id:user_id`.
"""

from __future__ import annotations

from typing import Any

from libs.schemas.base import Id, ShortStr, TenantContract, UtcDatetime

TOPIC = "verifications"
KEY_RULE = "app_id:user_id"


class UserVerified(TenantContract):
    """A user passed the app's own verification; attribution uses it to confirm installs."""

    verification_id: Id
    user_id: Id
    device_id: Id | None = None
    ts: UtcDatetime
    method: ShortStr | None = None


def key(m: UserVerified) -> str:
    """Kafka key: `app_id:user_id`."""
    return f"{m.app_id}:{m.user_id}"


EXAMPLES: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "app_id": "digikala",
        "verification_id": "v_20240501_u1001",
        "user_id": "u_1001",
        "device_id": "dev_8c1f2a7b",
        "ts": "2024-05-01T08:40:00Z",
        "method": "otp",
    },
    {
        "schema_version": 1,
        "app_id": "snapp_food",
        "verification_id": "v_kyc_42",
        "user_id": "u_42",
        "ts": "2024-05-01T13:10:00+03:30",
        "method": "احراز هویت حضوری",
    },
]
