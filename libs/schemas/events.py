"""Topic `events`: SDK, server-to-server and backend events, produced by ingest.

Idempotency key: `event_id`. Keyed by `app_id:device_id` (or `app_id:user_id` when a
backend event carries no device) so one device's events stay in order.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from libs.schemas.base import (
    ANONYMOUS_PREFIX,
    NO_NUL,
    Id,
    Name,
    Platform,
    Props,
    ShortStr,
    TenantContract,
    Timezone,
    UtcDatetime,
    contract_violation,
    user_key_of,
)

TOPIC = "events"
KEY_RULE = "app_id:device_id, or app_id:user_id when device_id is absent"


class Event(TenantContract):
    """One named event of one user or device.

    `ts` is client time after clock-skew correction; `received_at` is ingest's clock.
    At least one of `device_id` and `user_id` is set.
    """

    event_id: Id
    name: Name
    device_id: Id | None = None
    user_id: Id | None = None
    adid: Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)] | None = None
    ts: UtcDatetime
    received_at: UtcDatetime
    # "admin": a profile edit made in admin's API (PATCH /admin/v1/users/{user_key});
    # "journey": an attribute written by a journey's update node. Neither is something
    # the user did: it is not counted and does not make the user seen.
    source: Literal["sdk", "s2s", "backend", "admin", "journey"] = "backend"
    platform: Platform | None = None
    os_version: ShortStr | None = None
    device_model: ShortStr | None = None
    app_version: ShortStr | None = None
    locale: ShortStr | None = None
    timezone: Timezone | None = None
    session_id: Id | None = None
    ip: Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)] | None = None
    props: Props = Field(default_factory=dict)
    # Negative amounts are refunds; only NaN/Infinity are meaningless.
    revenue: Annotated[float, Field(allow_inf_nan=False)] | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None

    @model_validator(mode="after")
    def _has_identity(self) -> Event:
        if self.device_id is None and self.user_id is None:
            raise contract_violation("device_id", "one of device_id or user_id is required")
        if self.user_id is not None and self.user_id.startswith(ANONYMOUS_PREFIX):
            # It would collide with the anonymous profile of a device.
            raise contract_violation("user_id", f"must not start with {ANONYMOUS_PREFIX!r}")
        return self

    @property
    def user_key(self) -> str:
        """The profile key: `user_id` when known, else `d:<device_id>`."""
        return user_key_of(self.user_id, self.device_id)


def key(m: Event) -> str:
    """Kafka key: `app_id:device_id`, falling back to `app_id:user_id`."""
    if m.device_id:
        return f"{m.app_id}:{m.device_id}"
    return f"{m.app_id}:{m.user_id}"


EXAMPLES: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "app_id": "digikala",
        "event_id": "e_5f0c2d1e-7a44-4b1e-9f3a-2c8d1b6e4a90",
        "name": "purchase",
        "device_id": "dev_8c1f2a7b",
        "user_id": "u_1001",
        "adid": "38400000-8cf0-11bd-b23e-10b96e40000d",
        "ts": "2024-05-01T10:15:00.120000Z",
        "received_at": "2024-05-01T10:15:01.004000Z",
        "source": "sdk",
        "platform": "android",
        "os_version": "13",
        "device_model": "SM-A536E",
        "app_version": "5.12.0",
        "locale": "fa-IR",
        "timezone": "Asia/Tehran",
        "session_id": "s_77a1",
        "ip": "5.160.12.34",
        "props": {
            "product": "گوشی موبایل سامسونگ",
            "category": "electronics",
            "items": [{"sku": "SM-A536E", "qty": 1}],
            "coupon": None,
            "first_purchase": True,
        },
        "revenue": 125000000.0,
        "currency": "IRR",
    },
    {
        "schema_version": 1,
        "app_id": "snapp_food",
        "event_id": "e_b1c2d3",
        "name": "order_refunded",
        "user_id": "u_42",
        "ts": "2024-05-02T00:00:00Z",
        "received_at": "2024-05-02T00:00:00.500000Z",
        "source": "backend",
        "props": {"order_id": "o-9912", "reason": "لغو سفارش"},
        "revenue": -49.0,
        "currency": "USD",
    },
]
