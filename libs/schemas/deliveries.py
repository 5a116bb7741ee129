"""Topic `deliveries`: the fate of a send job, produced by the dispatcher.

Idempotency key: `receipt_id`. Keyed by `app_id:user_key`. One job yields several
receipts over time (sent, delivered, opened, ...).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import StringConstraints

from libs.schemas.base import NO_NUL, Id, ShortStr, TenantContract, UserKey, UtcDatetime
from libs.schemas.send_jobs import Channel

TOPIC = "deliveries"
KEY_RULE = "app_id:user_key"

DeliveryStatus = Literal[
    "sent", "delivered", "failed", "suppressed", "opened", "clicked", "converted"
]


class DeliveryReceipt(TenantContract):
    """One status change of one send job on one channel.

    `error` explains "failed" and "suppressed" (e.g. quiet hours, frequency cap).
    """

    receipt_id: Id
    job_id: Id
    user_key: UserKey
    channel: Channel
    status: DeliveryStatus
    provider: ShortStr
    provider_message_id: (
        Annotated[str, StringConstraints(max_length=256, pattern=NO_NUL)] | None
    ) = None
    error: Annotated[str, StringConstraints(max_length=1024, pattern=NO_NUL)] | None = None
    ts: UtcDatetime
    journey_id: Id | None = None
    # Where the job came from, copied from it: journey run and node, A/B/n variant,
    # broadcast. Reports group receipts and conversions by these.
    run_id: Id | None = None
    step_id: ShortStr | None = None
    variant_id: ShortStr | None = None
    broadcast_id: Id | None = None
    # A machine-readable cause of "failed" / "suppressed" ("quiet_hours",
    # "frequency_cap", "no_push_token", "token_invalid"); `error` is its human text.
    reason: Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)] | None = None


def key(m: DeliveryReceipt) -> str:
    """Kafka key: `app_id:user_key`."""
    return f"{m.app_id}:{m.user_key}"


EXAMPLES: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "app_id": "digikala",
        "receipt_id": "r_j_run88_step3_u1001_sent",
        "job_id": "j_run88_step3_u1001",
        "user_key": "u_1001",
        "channel": "push",
        "status": "sent",
        "provider": "fcm",
        "provider_message_id": "projects/digikala/messages/0:1714561200%31bd1c9",
        "error": None,
        "ts": "2024-05-01T11:00:01.200000Z",
        "journey_id": "jr_cart_abandon",
    },
    {
        "schema_version": 1,
        "app_id": "snapp_food",
        "receipt_id": "r_otp-9b1e2c_failed",
        "job_id": "otp-9b1e2c",
        "user_key": "u_42",
        "channel": "sms",
        "status": "failed",
        "provider": "kavenegar",
        "error": "شماره گیرنده نامعتبر است",
        "ts": "2024-05-01T12:00:02Z",
    },
]
