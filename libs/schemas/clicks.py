"""Topic `clicks`: one record per tracker-link click, produced by the tracker.

Idempotency key: `click_id`. Keyed by `app_id:click_id`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from libs.schemas.base import (
    NO_NUL,
    Id,
    LongStr,
    ShortStr,
    TenantContract,
    TrackerToken,
    UtcDatetime,
)

TOPIC = "clicks"
KEY_RULE = "app_id:click_id"

SubIdKey = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=NO_NUL)]
SubIdValue = Annotated[str, StringConstraints(max_length=256, pattern=NO_NUL)]


class ClickRecorded(TenantContract):
    """A click on a tracker link, as the tracker saw the HTTP request."""

    click_id: Id
    tracker_token: TrackerToken
    ts: UtcDatetime
    ip: Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)] | None = None
    # The tracker truncates to this length; the contract rejects longer values.
    user_agent: Annotated[str, StringConstraints(max_length=2048, pattern=NO_NUL)] | None = None
    accept_language: ShortStr | None = None
    referer: LongStr | None = None
    adid: Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)] | None = None
    network_click_id: Annotated[str, StringConstraints(max_length=256, pattern=NO_NUL)] | None = (
        None
    )
    sub_ids: dict[SubIdKey, SubIdValue] = Field(default_factory=dict, max_length=10)
    redirect_url: LongStr | None = None
    is_bot: bool = False
    # An ad view (GET /i/{token}) for view-through attribution; added in v1, defaulted.
    kind: Literal["click", "impression"] = "click"


def key(m: ClickRecorded) -> str:
    """Kafka key: `app_id:click_id`."""
    return f"{m.app_id}:{m.click_id}"


EXAMPLES: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "app_id": "digikala",
        "click_id": "c_01HZX3K9V7Q2M8R4T6Y1B5N0PA",
        "tracker_token": "abc123",
        "ts": "2024-05-01T08:30:12.345000Z",
        "ip": "5.160.12.34",
        "user_agent": "Mozilla/5.0 (Linux; Android 13; SM-A536E) AppleWebKit/537.36",
        "accept_language": "fa-IR,fa;q=0.9,en;q=0.8",
        "referer": "https://www.instagram.com/",
        "adid": None,
        "network_click_id": "ig-77812",
        "sub_ids": {"sub1": "بهار-۱۴۰۳", "sub2": "story"},
        "redirect_url": "https://play.google.com/store/apps/details?id=com.digikala",
        "is_bot": False,
    },
    {
        "schema_version": 1,
        "app_id": "snapp_food",
        "click_id": "c_01HZX3M2A1B2C3D4E5F6G7H8J9",
        "tracker_token": "yektanet-banner",
        "ts": "2024-05-01T09:00:00Z",
        "ip": "2a01:5ec0:1::1",
        "user_agent": "Googlebot/2.1 (+http://www.google.com/bot.html)",
        "sub_ids": {},
        "is_bot": True,
    },
]
