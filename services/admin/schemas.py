"""Admin API schemas (separate from topic contracts and ORM classes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from libs.schemas.base import contract_violation, find_nul
from libs.schemas.journeys import JourneyDefinition, SegmentEntered

TrackerChannel = Literal[
    "landing_page",
    "cafe_bazaar",
    "myket",
    "google_play",
    "app_store",
    "telegram",
    "instagram_bio",
    "instagram_story",
    "direct_apk",
    "web",
    "custom",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # Everything here ends up in Postgres, which cannot store NUL.
        where = find_nul(data)
        if where is not None:
            raise contract_violation(where, "must not contain the NUL character")
        return data


class TrackerCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    channel: TrackerChannel
    store_url: AnyHttpUrl = Field(max_length=2048)
    network: str | None = Field(default=None, max_length=200)
    campaign: str | None = Field(default=None, max_length=200)
    adgroup: str | None = Field(default=None, max_length=200)
    creative: str | None = Field(default=None, max_length=200)


class TrackerRead(BaseModel):
    token: str
    click_url: str
    name: str
    channel: str
    store_url: str
    network: str | None
    campaign: str | None
    adgroup: str | None
    creative: str | None
    status: str
    created_at: datetime


class SegmentCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    rule: dict[str, Any]


class SegmentRead(BaseModel):
    id: str
    name: str
    rule: dict[str, Any]
    status: str
    created_at: datetime


class JourneyCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    trigger: SegmentEntered
    definition: JourneyDefinition


class JourneyRead(BaseModel):
    id: str
    name: str
    trigger: dict[str, Any]
    definition: dict[str, Any]
    status: str
    created_at: datetime


class ProfileRead(BaseModel):
    user_key: str
    user_id: str | None
    attributes: dict[str, Any]
    first_seen: datetime | None
    last_seen: datetime | None
    platform: str | None
    app_version: str | None
    os_version: str | None
    device_model: str | None
    locale: str | None
    timezone: str | None
    attribution: dict[str, Any] | None
    sessions: int
    purchases: int
    revenue: float
    events: int
    segments: list[str]


class DeliveryRead(BaseModel):
    receipt_id: str
    job_id: str
    channel: str
    status: str
    provider: str
    provider_message_id: str | None
    error: str | None
    journey_id: str | None
    ts: datetime


class DeliveryList(BaseModel):
    items: list[DeliveryRead]
