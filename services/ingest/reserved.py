"""Rules of the reserved (``$``-prefixed) events and of user ids. Pure.

Reserved events carry meaning downstream (the segmenter builds profiles from them, the
attribution consumer matches installs, the dispatcher honours opt-outs), so their shapes
are a contract: an event that breaks its shape is rejected at the edge, naming the field,
rather than being half-understood by a consumer. Custom events (no ``$``) are free-form.

Every check raises ``InvalidInput`` with the dotted field path (``props.set.phone``) and
a reason; nothing else escapes for any JSON input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from libs.runtime.errors import InvalidInput
from libs.schemas import Event

# Ids that buggy apps send when they have no user: merging profiles on one of them
# would fuse every anonymous user of the app into one profile. Compared case-insensitively
# after trimming whitespace; an empty or whitespace-only id is a placeholder too.
PLACEHOLDER_USER_IDS = frozenset(
    {
        "null",
        "undefined",
        "none",
        "nil",
        "0",
        "-1",
        "anonymous",
        "guest",
        "unknown",
        "[object object]",
        "",
    }
)

ATTRIBUTE_OPERATIONS = ("set", "set_once", "increment", "unset")
# Attributes the dispatcher addresses messages by: they must stay strings.
CONTACT_ATTRIBUTES = ("phone", "email")
PUSH_PROVIDERS = ("fcm", "apns", "webpush")
CONSENT_CHANNELS = ("push", "sms", "email", "web_push", "in_app")
MAX_PUSH_TOKEN = 4096
MAX_JOB_ID = 128
MAX_ATTRIBUTE_NAME = 128


def is_placeholder_user_id(value: str) -> bool:
    """True for ``null``, ``guest``, ``[object Object]``, blank… in any case."""
    return value.strip().lower() in PLACEHOLDER_USER_IDS


def check_user_id(value: str, field: str = "user_id") -> None:
    """Raise ``InvalidInput`` when ``value`` is a placeholder rather than a real user id."""
    if is_placeholder_user_id(value):
        raise InvalidInput(
            f"{value.strip()!r} is a placeholder, not a user id; omit user_id until the user "
            "is known",
            field=field,
        )


def _is_number(value: Any) -> bool:
    # bool is an int in Python but never a number in JSON.
    return type(value) in (int, float) and math.isfinite(value)


def _needs_device(event: Event) -> None:
    if event.device_id is None:
        raise InvalidInput(f"a {event.name} event needs a device_id", field="device_id")


def _identify(event: Event) -> None:
    _needs_device(event)
    if event.user_id is None:
        raise InvalidInput("an $identify event needs the user_id to link", field="user_id")


def _attributes(event: Event) -> None:
    props = event.props
    unknown = sorted(set(props) - set(ATTRIBUTE_OPERATIONS))
    if unknown:
        raise InvalidInput(
            "not an attribute operation; use " + ", ".join(ATTRIBUTE_OPERATIONS),
            field=f"props.{unknown[0]}",
        )
    if not props:
        raise InvalidInput(
            "an $attributes event needs one of " + ", ".join(ATTRIBUTE_OPERATIONS),
            field="props",
        )
    for operation in ("set", "set_once"):
        values = props.get(operation)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise InvalidInput("must be an object of attribute values", field=f"props.{operation}")
        for name in CONTACT_ATTRIBUTES:
            if name in values and not isinstance(values[name], str):
                raise InvalidInput("must be a string", field=f"props.{operation}.{name}")
    increments = props.get("increment")
    if increments is not None:
        if not isinstance(increments, dict):
            raise InvalidInput("must be an object of name: number", field="props.increment")
        for name, amount in increments.items():
            if not _is_number(amount):
                raise InvalidInput("must be a number", field=f"props.increment.{name}")
    unset = props.get("unset")
    if unset is not None:
        if not isinstance(unset, list):
            raise InvalidInput("must be a list of attribute names", field="props.unset")
        for index, name in enumerate(unset):
            if not isinstance(name, str) or not 1 <= len(name) <= MAX_ATTRIBUTE_NAME:
                raise InvalidInput(
                    f"must be an attribute name of 1 to {MAX_ATTRIBUTE_NAME} characters",
                    field=f"props.unset.{index}",
                )


def _push_token(event: Event) -> None:
    token = event.props.get("token")
    if not isinstance(token, str) or not 1 <= len(token) <= MAX_PUSH_TOKEN:
        raise InvalidInput(
            f"a $push_token needs the token, a string of 1 to {MAX_PUSH_TOKEN} characters",
            field="props.token",
        )
    if event.props.get("provider") not in PUSH_PROVIDERS:
        raise InvalidInput("must be one of " + ", ".join(PUSH_PROVIDERS), field="props.provider")


def _push_permission(event: Event) -> None:
    if not isinstance(event.props.get("granted"), bool):
        raise InvalidInput("a $push_permission needs granted: true or false", field="props.granted")


def _location(event: Event) -> None:
    for name, bound in (("lat", 90), ("lon", 180)):
        value: Any = event.props.get(name)
        if not _is_number(value) or not -bound <= value <= bound:
            raise InvalidInput(f"must be a number from -{bound} to {bound}", field=f"props.{name}")
    if "accuracy" in event.props:
        accuracy = event.props["accuracy"]
        if not _is_number(accuracy) or accuracy < 0:
            raise InvalidInput("must be a number of metres ≥ 0", field="props.accuracy")


def _purchase(event: Event) -> None:
    if event.revenue is None:
        raise InvalidInput("a $purchase needs revenue", field="revenue")
    if event.currency is None:
        raise InvalidInput("a $purchase needs the ISO 4217 currency", field="currency")
    if event.revenue < 0 and event.props.get("refund") is not True:
        raise InvalidInput(
            'must be ≥ 0; a refund carries a negative revenue with props {"refund": true}',
            field="revenue",
        )


def _message(event: Event) -> None:
    job_id = event.props.get("job_id")
    if not isinstance(job_id, str) or not 1 <= len(job_id) <= MAX_JOB_ID:
        raise InvalidInput(
            f"a {event.name} needs the job_id of the message it reports", field="props.job_id"
        )


def _consent(event: Event) -> None:
    if event.props.get("channel") not in CONSENT_CHANNELS:
        raise InvalidInput("must be one of " + ", ".join(CONSENT_CHANNELS), field="props.channel")


RESERVED: Mapping[str, Callable[[Event], None]] = {
    "$install": _needs_device,
    "$uninstall": _needs_device,
    "$open": _needs_device,
    "$close": _needs_device,
    "$identify": _identify,
    "$attributes": _attributes,
    "$push_token": _push_token,
    "$push_permission": _push_permission,
    "$location": _location,
    "$purchase": _purchase,
    "$message_opened": _message,
    "$message_clicked": _message,
    "$opt_out": _consent,
    "$opt_in": _consent,
}


def check_event(event: Event) -> None:
    """Apply the user-id rule and, for a ``$`` name, its reserved shape.

    Raises ``InvalidInput`` naming the field; returns nothing for a valid event.
    """
    if event.user_id is not None:
        check_user_id(event.user_id)
    if not event.name.startswith("$"):
        return
    rule = RESERVED.get(event.name)
    if rule is None:
        raise InvalidInput(
            f"{event.name!r} uses the reserved prefix '$' but is not a reserved event",
            field="name",
        )
    rule(event)
