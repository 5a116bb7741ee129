"""Dead-letter topics: `<topic>.dlq` holds records a consumer could not process.

The original key and value travel base64-encoded so undecodable bytes survive
unchanged. Records keep the source key, so a DLQ partition mirrors the source one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from libs.schemas.base import NO_NUL, Contract, UtcDatetime

DLQ_SUFFIX = ".dlq"
KEY_RULE = "the source record's key, unchanged"
MAX_ERROR_LENGTH = 4096
# The original value is kept up to this many bytes (base64 adds a third): a poison
# record near the broker's 1 MB limit must still fit in its DLQ envelope.
MAX_DLQ_VALUE_BYTES = 512 * 1024
_TRUNCATED = "…[truncated]"

_INT64_MAX = 2**63 - 1
TopicName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]
# Canonical padded base64, so key_bytes()/value_bytes() cannot fail on a decoded record.
Base64 = Annotated[
    str,
    StringConstraints(pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"),
]


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return f"{topic}{DLQ_SUFFIX}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class DlqRecord(Contract):
    """A poison record plus why it failed. Has no `app_id`: garbage may carry none.

    A tombstone (None value) is stored as an empty `value_b64`.
    """

    source_topic: TopicName
    partition: int = Field(ge=0, le=_INT64_MAX)
    offset: int = Field(ge=0, le=_INT64_MAX)
    key_b64: Base64 | None = None
    value_b64: Base64
    error: Annotated[str, StringConstraints(max_length=MAX_ERROR_LENGTH, pattern=NO_NUL)]
    consumer_group: TopicName
    failed_at: UtcDatetime
    # Set when the value was cut to MAX_DLQ_VALUE_BYTES; the digest and length are those
    # of the whole original, so it can be found again in the source topic.
    value_truncated: bool = False
    value_length: int = Field(default=0, ge=0, le=_INT64_MAX)
    value_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None

    @classmethod
    def from_failure(
        cls,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: str,
        consumer_group: str,
        failed_at: datetime,
    ) -> DlqRecord:
        """Build the DLQ record of a failed source record; truncates `error` to fit.

        Raises pydantic.ValidationError only for caller bugs (naive `failed_at`,
        negative offsets), never because of the record's content.
        """
        error = error.replace("\x00", "\\x00")  # the reason may quote the poison itself
        if len(error) > MAX_ERROR_LENGTH:
            error = error[: MAX_ERROR_LENGTH - len(_TRUNCATED)] + _TRUNCATED
        raw = value or b""
        return cls(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key_b64=None if key is None else _b64(key[:MAX_DLQ_VALUE_BYTES]),
            value_b64=_b64(raw[:MAX_DLQ_VALUE_BYTES]),
            value_truncated=len(raw) > MAX_DLQ_VALUE_BYTES,
            value_length=len(raw),
            value_sha256=hashlib.sha256(raw).hexdigest(),
            error=error,
            consumer_group=consumer_group,
            failed_at=failed_at,
        )

    def key_bytes(self) -> bytes | None:
        """The original key bytes, or None; raises ValueError if `key_b64` is corrupt."""
        return None if self.key_b64 is None else _unb64(self.key_b64)

    def value_bytes(self) -> bytes:
        """The original value bytes; raises ValueError if `value_b64` is corrupt."""
        return _unb64(self.value_b64)


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from None


def key(m: DlqRecord) -> str | None:
    """The source key as text (undecodable bytes replaced), or None if it had none.

    Partitioning only needs a stable string; the exact bytes stay in `key_b64`.
    """
    raw = m.key_bytes() if m.key_b64 is not None else None
    return None if raw is None else raw.decode("utf-8", errors="replace")


EXAMPLES: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "source_topic": "events",
        "partition": 3,
        "offset": 1048576,
        "key_b64": _b64(b"digikala:dev_8c1f2a7b"),
        "value_b64": _b64(b'{"app_id": "digikala", "name": "\xd8\xae\xd8\xb1\xdb\x8c\xd8\xaf"'),
        "error": "invalid JSON: unexpected end of data: line 1 column 50 (char 49)",
        "consumer_group": "segmenter.events",
        "failed_at": "2024-05-01T10:15:02Z",
    },
    {
        "schema_version": 1,
        "source_topic": "send-jobs",
        "partition": 0,
        "offset": 17,
        "key_b64": None,
        "value_b64": _b64(b"\xff\xfe\x00garbage"),
        "error": (
            "invalid JSON: str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)"
        ),
        "consumer_group": "dispatcher.send-jobs",
        "failed_at": "2024-05-01T11:00:05Z",
    },
]
