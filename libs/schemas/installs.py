"""Topic `installs`: the first launch of an app install, reported by the SDK via ingest.

Idempotency key: `event_id`. Keyed by `app_id:device_id`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import StringConstraints

from libs.schemas.base import NO_NUL, Id, LongStr, Platform, ShortStr, TenantContract, UtcDatetime

TOPIC = "installs"
KEY_RULE = "app_id:device_id"
SignatureCheck = Literal["ok", "missing", "malformed", "stale", "bad_signature", "replay"]


class InstallReported(TenantContract):
    """An install (or reinstall: a new `device_id`) as the SDK reported it.

    `referrer` is the store install referrer when the platform has one;
    `install_begin_ts` is when the store download started. `is_emulator` and
    `is_rooted` are the SDK's device checks. `signature` is ingest's verdict on the
    request's SDK signature for an app that requires signing (None: not required);
    anything but "ok" makes the install fraud (`bad_signature`).
    """

    event_id: Id
    device_id: Id
    user_id: Id | None = None
    adid: Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)] | None = None
    ts: UtcDatetime
    received_at: UtcDatetime
    platform: Platform | None = None
    os_version: ShortStr | None = None
    device_model: ShortStr | None = None
    app_version: ShortStr | None = None
    locale: ShortStr | None = None
    ip: Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)] | None = None
    user_agent: Annotated[str, StringConstraints(max_length=2048, pattern=NO_NUL)] | None = None
    referrer: LongStr | None = None
    install_begin_ts: UtcDatetime | None = None
    is_emulator: bool = False
    is_rooted: bool = False
    signature: SignatureCheck | None = None


def key(m: InstallReported) -> str:
    """Kafka key: `app_id:device_id`."""
    return f"{m.app_id}:{m.device_id}"


EXAMPLES: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "app_id": "digikala",
        "event_id": "i_3e4f5a6b",
        "device_id": "dev_8c1f2a7b",
        "user_id": None,
        "adid": "38400000-8cf0-11bd-b23e-10b96e40000d",
        "ts": "2024-05-01T08:34:40Z",
        "received_at": "2024-05-01T08:34:41.250000Z",
        "platform": "android",
        "os_version": "13",
        "device_model": "SM-A536E",
        "app_version": "5.12.0",
        "locale": "fa-IR",
        "ip": "5.160.12.34",
        "user_agent": "Dalvik/2.1.0 (Linux; U; Android 13; SM-A536E)",
        "referrer": "click_id=c_01HZX3K9V7Q2M8R4T6Y1B5N0PA&utm_source=hodhod",
        "install_begin_ts": "2024-05-01T08:31:05Z",
        "is_emulator": False,
        "is_rooted": False,
        "signature": "ok",
    },
    {
        "schema_version": 1,
        "app_id": "snapp_food",
        "event_id": "i_9a8b7c",
        "device_id": "ios-7F3E2D1C",
        "ts": "2024-05-01T12:00:00+03:30",
        "received_at": "2024-05-01T08:30:02Z",
        "platform": "ios",
        "os_version": "17.4.1",
        "device_model": "iPhone14,5",
        "app_version": "3.2.0",
        "locale": "fa-IR",
    },
]
