"""Admin API schemas (separate from topic contracts and ORM classes)."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from libs.schemas.base import Name, Props, contract_violation, find_nul
from services.admin.logic import NOT_POSTBACK_EVENTS, unchosen_postback_events

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


MAX_WINDOW_HOURS = 30 * 24
Hours = Annotated[int, Field(ge=1, le=MAX_WINDOW_HOURS)]
Domain = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+$", to_lower=True)
]


MAX_POSTBACK_URLS = 10
MAX_POSTBACK_EVENTS = 50
PostbackUrls = Annotated[list[AnyHttpUrl], Field(max_length=MAX_POSTBACK_URLS)]


def _postback_events(value: list[str] | None) -> list[str] | None:
    """The chosen event names, each once, in the order given; ``$install`` refused."""
    if value is None:
        return None
    for i, name in enumerate(value):
        if name in NOT_POSTBACK_EVENTS:
            raise contract_violation(str(i), "installs are posted back to postback_urls")
    return list(dict.fromkeys(value))


class _TrackerFields(_In):
    network: str | None = Field(default=None, max_length=200)
    campaign: str | None = Field(default=None, max_length=200)
    adgroup: str | None = Field(default=None, max_length=200)
    creative: str | None = Field(default=None, max_length=200)
    click_window_hours: Hours = 168
    fingerprint_window_hours: Hours = 24
    view_window_hours: Hours = 24
    counting: Literal["on_install", "on_verification"] = "on_install"
    cost_model: Literal["cpi", "total"] | None = None
    cost_amount: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    cost_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    postback_urls: PostbackUrls = Field(default_factory=list)
    # In-app events posted back (to postback_urls, or to their own event_postback_urls).
    postback_events: list[Name] = Field(default_factory=list, max_length=MAX_POSTBACK_EVENTS)
    event_postback_urls: dict[Name, PostbackUrls] = Field(
        default_factory=dict, max_length=MAX_POSTBACK_EVENTS
    )
    redirect_domains: list[Domain] = Field(default_factory=list, max_length=20)

    _chosen = field_validator("postback_events")(_postback_events)

    @model_validator(mode="after")
    def _cost_is_whole(self) -> _TrackerFields:
        given = [self.cost_model, self.cost_amount, self.cost_currency]
        if any(v is not None for v in given) and any(v is None for v in given):
            raise contract_violation("cost_model", "cost needs cost_model, amount and currency")
        return self

    @model_validator(mode="after")
    def _event_urls_are_chosen(self) -> _TrackerFields:
        unchosen = unchosen_postback_events(self.postback_events, self.event_postback_urls)
        if unchosen:
            raise contract_violation(
                f"event_postback_urls.{unchosen[0]}", "the event is not in postback_events"
            )
        return self


class TrackerCreate(_TrackerFields):
    name: str = Field(min_length=1, max_length=200)
    channel: TrackerChannel
    store_url: AnyHttpUrl = Field(max_length=2048)


class TrackerUpdate(_In):
    """A PATCH: only the fields sent change (``null`` clears an optional one)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    store_url: AnyHttpUrl | None = Field(default=None, max_length=2048)
    network: str | None = Field(default=None, max_length=200)
    campaign: str | None = Field(default=None, max_length=200)
    adgroup: str | None = Field(default=None, max_length=200)
    creative: str | None = Field(default=None, max_length=200)
    click_window_hours: Hours | None = None
    fingerprint_window_hours: Hours | None = None
    view_window_hours: Hours | None = None
    counting: Literal["on_install", "on_verification"] | None = None
    cost_model: Literal["cpi", "total"] | None = None
    cost_amount: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    cost_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    postback_urls: PostbackUrls | None = None
    postback_events: list[Name] | None = Field(default=None, max_length=MAX_POSTBACK_EVENTS)
    event_postback_urls: dict[Name, PostbackUrls] | None = Field(
        default=None, max_length=MAX_POSTBACK_EVENTS
    )
    redirect_domains: list[Domain] | None = Field(default=None, max_length=20)

    _chosen = field_validator("postback_events")(_postback_events)


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
    click_window_hours: int
    fingerprint_window_hours: int
    view_window_hours: int
    counting: str
    cost_model: str | None
    cost_amount: Decimal | None
    cost_currency: str | None
    postback_urls: list[str]
    postback_events: list[str]
    event_postback_urls: dict[str, list[str]]
    redirect_domains: list[str]


class SegmentCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    rule: dict[str, Any]


class SegmentUpdate(_In):
    """A PATCH: only the fields sent change; neither may be null."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    rule: dict[str, Any] | None = None


class SegmentRead(BaseModel):
    id: str
    name: str
    rule: dict[str, Any]
    status: str
    created_at: datetime
    updated_at: datetime


class RuleCheck(_In):
    rule: dict[str, Any]


class RuleCheckRead(BaseModel):
    valid: Literal[True]
    # Segments the rule references (they exist and make no cycle).
    references: list[str]
    # True when the clock alone can change the answer: the segmenter then re-evaluates
    # it every scheduler tick, not only on events.
    time_dependent: bool


MAX_SAMPLE = 100


class PreviewRequest(_In):
    rule: dict[str, Any]
    sample: int = Field(default=10, ge=0, le=MAX_SAMPLE)
    group_by: Literal["tracker"] | None = None
    rank_by: Literal["matching", "share"] = "matching"


class SampleUser(BaseModel):
    user_key: str
    user_id: str | None
    first_seen: datetime | None
    last_seen: datetime | None
    platform: str | None
    tracker_token: str | None
    sessions: int
    purchases: int
    revenue: float


class PreviewRead(BaseModel):
    count: int
    sample: list[SampleUser]
    # Matching users reachable on each channel (the rule language's ``reachable``).
    by_channel: dict[str, int]


class TrackerGroup(BaseModel):
    tracker_token: str
    name: str | None
    attributed_users: int
    matching: int
    share: float


class TrackerComparison(BaseModel):
    count: int
    groups: list[TrackerGroup]


class UserSegmentRead(BaseModel):
    segment_id: str
    name: str
    entered_at: datetime


class UserSegments(BaseModel):
    user_key: str
    items: list[UserSegmentRead]


class JourneyCreate(_In):
    """A journey: ``trigger`` and ``definition`` in the journey language
    (docs/journeys.md; legacy ``{"segment_entered": id}`` / ``{"steps": [...]}`` too),
    checked by ``libs.journeys.validate`` so that a 422 names the bad path."""

    name: str = Field(min_length=1, max_length=200)
    trigger: dict[str, Any]
    definition: dict[str, Any]
    # draft: stored and validated, enters nobody until activated.
    status: Literal["draft", "active"] = "active"


class JourneyUpdate(_In):
    """Fields to change; a new trigger or definition is a new version."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    trigger: dict[str, Any] | None = None
    definition: dict[str, Any] | None = None


class JourneyCheck(_In):
    trigger: dict[str, Any]
    definition: dict[str, Any]


class JourneyRead(BaseModel):
    id: str
    name: str
    trigger: dict[str, Any]
    definition: dict[str, Any]
    status: str
    version: int
    created_at: datetime
    updated_at: datetime


class JourneyList(BaseModel):
    items: list[JourneyRead]


class JourneyValidation(BaseModel):
    valid: bool
    # The journey in its current form (legacy forms translated, defaults filled in).
    trigger: dict[str, Any]
    definition: dict[str, Any]
    segments: list[str]
    templates: list[str]


BroadcastChannel = Literal["push", "web_push", "sms", "email", "in_app", "inbox", "log", "best"]


class BroadcastCreate(_In):
    """A message to a segment's members at a time (or recurring), optionally at each
    member's local time, throttled: a one-node scheduled journey."""

    name: str = Field(min_length=1, max_length=200)
    segment: str = Field(min_length=1, max_length=32)
    channel: BroadcastChannel
    fallback: list[str] = Field(default_factory=list, max_length=6)
    content: dict[str, Any] | None = None
    template_id: str | None = Field(default=None, max_length=128)
    category: str | None = Field(default=None, max_length=64)
    at: datetime
    every: dict[str, float] | None = None
    until: datetime | None = None
    local_time: str | None = None
    per_second: int | None = Field(default=None, ge=1, le=100_000)
    expires_after: dict[str, float] | None = None


class BroadcastRead(BaseModel):
    id: str
    name: str
    status: str
    trigger: dict[str, Any]
    send: dict[str, Any]
    created_at: datetime


class BroadcastList(BaseModel):
    items: list[BroadcastRead]


class BroadcastPreview(BaseModel):
    count: int
    by_channel: dict[str, int]


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
    # The devices whose records fold into this profile (their aliases name it).
    devices: list[str]
    push_permission: bool | None
    push_tokens: list[dict[str, Any]]
    web_push: list[dict[str, Any]]
    phone: str | None
    email: str | None
    opt_outs: list[str]


ConsentChannel = Literal["push", "sms", "email", "web_push", "in_app"]
AttributeName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{6,15}$")]
Email = Annotated[
    str, StringConstraints(max_length=256, pattern=r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
]


class ProfileUpdate(_In):
    """A profile edit (PATCH): only what is sent changes. ``phone``/``email`` null
    removes them; ``opt_out``/``opt_in`` name channels."""

    set: Props | None = None
    unset: list[AttributeName] | None = Field(default=None, max_length=100)
    phone: Phone | None = None
    email: Email | None = None
    opt_out: list[ConsentChannel] | None = Field(default=None, max_length=5)
    opt_in: list[ConsentChannel] | None = Field(default=None, max_length=5)


class ProfileEditRead(BaseModel):
    """An accepted edit: the segmenter applies it shortly (it owns profiles)."""

    edit_id: str
    user_key: str
    # The ``$attributes`` props and the consent changes that will be applied.
    applies: dict[str, Any]


class ErasureRead(BaseModel):
    erasure_id: str
    user_key: str


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


Cidr = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_BLOCKED_NETWORKS = 10_000


class FraudSettings(_In):
    """An app's fraud thresholds: every field optional; an absent one keeps the default
    (services/attribution/fraud.py ``FraudConfig``). ``null`` restores the default."""

    min_click_to_install_s: int | None = Field(default=None, ge=0, le=86_400)
    max_clicks_per_hour: int | None = Field(default=None, ge=1, le=1_000_000)
    max_installs_per_ip_hour: int | None = Field(default=None, ge=1, le=1_000_000)
    min_conversion: float | None = Field(default=None, ge=0, le=1)
    min_clicks_for_conversion: int | None = Field(default=None, ge=1, le=1_000_000_000)
    reject_datacenter: bool | None = None
    reject_bots: bool | None = None
    reject_emulators: bool | None = None
    reject_rooted: bool | None = None
    blocked_ips: list[Cidr] | None = Field(default=None, max_length=MAX_BLOCKED_NETWORKS)

    @field_validator("blocked_ips")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = []
        for i, raw in enumerate(value):
            try:
                out.append(str(ipaddress.ip_network(raw, strict=False)))
            except ValueError:
                raise contract_violation(str(i), "must be an IP address or CIDR network") from None
        return out


class AppUpdate(_In):
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    require_signature: bool | None = None
    fraud: FraudSettings | None = None


class SdkSecretRead(BaseModel):
    id: str
    created_at: datetime
    revoked_at: datetime | None


class SdkSecretCreated(SdkSecretRead):
    """The secret is in this answer only: it is never shown again."""

    secret: str


class AppRead(BaseModel):
    id: str
    name: str
    timezone: str
    require_signature: bool
    fraud: dict[str, Any]
    sdk_secrets: list[SdkSecretRead]
