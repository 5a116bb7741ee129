"""Topic contracts: one frozen pydantic model per Kafka topic, its key rule and examples.

`CONTRACTS` maps each topic name to its `TopicContract`; `decode`/`encode` convert
between bytes and models. Pure: importing this package does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic

from libs.schemas import (
    attributions,
    clicks,
    config_changes,
    deliveries,
    events,
    installs,
    segment_changes,
    send_jobs,
    verifications,
)
from libs.schemas.attributions import (
    AttributionKind,
    AttributionMethod,
    AttributionStatus,
    UserAttributed,
)
from libs.schemas.base import (
    MAX_PROP_DEPTH,
    MAX_PROP_KEY_LENGTH,
    MAX_PROP_KEYS,
    MAX_PROP_LIST_ITEMS,
    MAX_PROP_STRING_LENGTH,
    MAX_PROP_TOTAL_KEYS,
    AppId,
    C,
    Contract,
    ContractError,
    Fragment,
    Id,
    LongStr,
    Name,
    Platform,
    Props,
    ShortStr,
    TenantContract,
    UtcDatetime,
    decode,
    encode,
    validate,
)
from libs.schemas.clicks import ClickRecorded
from libs.schemas.config_changes import ConfigChanged, Entity
from libs.schemas.deliveries import DeliveryReceipt, DeliveryStatus
from libs.schemas.dlq import DlqRecord, dlq_topic
from libs.schemas.events import Event
from libs.schemas.installs import InstallReported
from libs.schemas.segment_changes import SegmentChanged
from libs.schemas.send_jobs import Channel, MessageContent, SendJob
from libs.schemas.verifications import UserVerified


@dataclass(frozen=True)
class TopicContract(Generic[C]):
    """What a topic carries: its name, payload model, Kafka key function and examples.

    `key_rule` describes the key in words, for the exported JSON Schemas.
    """

    topic: str
    model: type[C]
    key: Callable[[C], str]
    examples: list[dict[str, Any]]
    key_rule: str


CONTRACTS: dict[str, TopicContract[Any]] = {
    c.topic: c
    for c in (
        TopicContract(clicks.TOPIC, ClickRecorded, clicks.key, clicks.EXAMPLES, clicks.KEY_RULE),
        TopicContract(events.TOPIC, Event, events.key, events.EXAMPLES, events.KEY_RULE),
        TopicContract(
            installs.TOPIC, InstallReported, installs.key, installs.EXAMPLES, installs.KEY_RULE
        ),
        TopicContract(
            verifications.TOPIC,
            UserVerified,
            verifications.key,
            verifications.EXAMPLES,
            verifications.KEY_RULE,
        ),
        TopicContract(
            attributions.TOPIC,
            UserAttributed,
            attributions.key,
            attributions.EXAMPLES,
            attributions.KEY_RULE,
        ),
        TopicContract(
            segment_changes.TOPIC,
            SegmentChanged,
            segment_changes.key,
            segment_changes.EXAMPLES,
            segment_changes.KEY_RULE,
        ),
        TopicContract(
            send_jobs.TOPIC, SendJob, send_jobs.key, send_jobs.EXAMPLES, send_jobs.KEY_RULE
        ),
        TopicContract(
            deliveries.TOPIC,
            DeliveryReceipt,
            deliveries.key,
            deliveries.EXAMPLES,
            deliveries.KEY_RULE,
        ),
        TopicContract(
            config_changes.TOPIC,
            ConfigChanged,
            config_changes.key,
            config_changes.EXAMPLES,
            config_changes.KEY_RULE,
        ),
    )
}

ALL_TOPICS: tuple[str, ...] = tuple(CONTRACTS)


def contract_for(topic: str) -> TopicContract[Any]:
    """The contract of `topic`; raises KeyError naming the known topics if unknown."""
    try:
        return CONTRACTS[topic]
    except KeyError:
        known = ", ".join(ALL_TOPICS)
        raise KeyError(f"no contract for topic {topic!r}; known topics: {known}") from None


__all__ = [
    "ALL_TOPICS",
    "CONTRACTS",
    "MAX_PROP_DEPTH",
    "MAX_PROP_KEYS",
    "MAX_PROP_KEY_LENGTH",
    "MAX_PROP_LIST_ITEMS",
    "MAX_PROP_STRING_LENGTH",
    "MAX_PROP_TOTAL_KEYS",
    "AppId",
    "AttributionKind",
    "AttributionMethod",
    "AttributionStatus",
    "Channel",
    "ClickRecorded",
    "ConfigChanged",
    "Contract",
    "ContractError",
    "DeliveryReceipt",
    "DeliveryStatus",
    "DlqRecord",
    "Entity",
    "Event",
    "Fragment",
    "Id",
    "InstallReported",
    "LongStr",
    "MessageContent",
    "Name",
    "Platform",
    "Props",
    "SegmentChanged",
    "SendJob",
    "ShortStr",
    "TenantContract",
    "TopicContract",
    "UserAttributed",
    "UserVerified",
    "UtcDatetime",
    "contract_for",
    "decode",
    "dlq_topic",
    "encode",
    "validate",
]
