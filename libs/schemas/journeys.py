"""The journey definition language (configuration written by marketers through admin).

Foundation subset: a trigger on entering a segment and a list of ``send`` steps run in
order. The journeys issue adds waits, branches, A/B splits, goals and exits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from libs.schemas.base import Id
from libs.schemas.send_jobs import MessageContent

Channel = Literal["push", "web_push", "sms", "email", "in_app", "inbox", "log"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SegmentEntered(_Frozen):
    segment_entered: str = Field(min_length=1, max_length=32)


class SendStep(_Frozen):
    channel: Channel
    content: MessageContent | None = None
    template_id: Id | None = None
    fallback_channels: list[Channel] = Field(default_factory=list, max_length=5)

    @model_validator(mode="after")
    def _one_source(self) -> SendStep:
        if (self.content is None) == (self.template_id is None):
            raise ValueError("a send step needs exactly one of content or template_id")
        return self


class Step(_Frozen):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    send: SendStep


class JourneyDefinition(_Frozen):
    steps: list[Step] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _unique_ids(self) -> JourneyDefinition:
        ids = [s.id for s in self.steps]
        if len(ids) != len(set(ids)):
            raise ValueError("step ids must be unique")
        return self
