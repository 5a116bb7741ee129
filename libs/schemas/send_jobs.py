"""Topic `send-jobs`: a request to message one user, produced by journey, admin and
other backends; consumed by the dispatcher.

Idempotency key: `job_id`. Keyed by `app_id:user_key`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from libs.schemas.base import (
    NO_NUL,
    Fragment,
    Id,
    LongStr,
    Props,
    ShortStr,
    TenantContract,
    UserKey,
    UtcDatetime,
    contract_violation,
)

TOPIC = "send-jobs"
KEY_RULE = "app_id:user_key"

Channel = Literal["push", "web_push", "sms", "email", "in_app", "inbox", "log"]

DataKey = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]
Title = Annotated[str, StringConstraints(max_length=512, pattern=NO_NUL)]


class MessageContent(Fragment):
    """Inline message content; may hold `{{ variables }}` rendered from `context`."""

    title: Title | None = None
    body: Annotated[str, StringConstraints(min_length=1, max_length=8192, pattern=NO_NUL)]
    url: LongStr | None = None
    data: dict[DataKey, LongStr] = Field(default_factory=dict, max_length=20)
    subject: Title | None = None


class SendJob(TenantContract):
    """Send one message to one user on `channel`, then `fallback_channels` in order.

    Exactly one of `content` and `template_id` is set. `transactional` jobs bypass
    marketing caps and quiet hours. A job past `expires_at` is dropped, not sent.
    """

    job_id: Id
    user_key: UserKey
    channel: Channel
    content: MessageContent | None = None
    template_id: Id | None = None
    context: Props = Field(default_factory=dict)
    transactional: bool = False
    journey_id: Id | None = None
    run_id: Id | None = None
    step_id: ShortStr | None = None
    created_at: UtcDatetime
    expires_at: UtcDatetime | None = None
    fallback_channels: list[Channel] = Field(default_factory=list, max_length=5)
    # The A/B/n branch of the run, or the broadcast, the job belongs to (for reports).
    variant_id: ShortStr | None = None
    broadcast_id: Id | None = None
    # Consent category ("promotions", "order_updates"): an opt-out of the category on
    # the channel suppresses the job. None is the channel's general marketing consent.
    category: ShortStr | None = None

    @model_validator(mode="after")
    def _one_content_source(self) -> SendJob:
        if (self.content is None) == (self.template_id is None):
            raise contract_violation("content", "exactly one of content or template_id is required")
        return self


def key(m: SendJob) -> str:
    """Kafka key: `app_id:user_key`."""
    return f"{m.app_id}:{m.user_key}"


EXAMPLES: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "app_id": "digikala",
        "job_id": "j_run88_step3_u1001",
        "user_key": "u_1001",
        "channel": "push",
        "content": {
            "title": "سلام {{ first_name }}!",
            "body": "سبد خرید شما منتظر است 🛒 تا پایان امروز ۱۰٪ تخفیف بگیرید.",
            "url": "digikala://cart",
            "data": {"campaign": "cart-abandon"},
            "subject": None,
        },
        "template_id": None,
        "context": {"first_name": "مریم", "cart_total": 2450000},
        "transactional": False,
        "journey_id": "jr_cart_abandon",
        "run_id": "run_88",
        "step_id": "step_3",
        "created_at": "2024-05-01T11:00:00Z",
        "expires_at": "2024-05-02T11:00:00Z",
        "fallback_channels": ["inbox", "sms"],
    },
    {
        "schema_version": 1,
        "app_id": "snapp_food",
        "job_id": "otp-9b1e2c",
        "user_key": "u_42",
        "channel": "sms",
        "template_id": "tpl_otp",
        "context": {"code": "48213"},
        "transactional": True,
        "created_at": "2024-05-01T12:00:00Z",
        "expires_at": "2024-05-01T12:02:00Z",
    },
]
