"""SDK signatures: HMAC-SHA256 over body + "." + timestamp, ±5 min skew, replay refused."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.runtime.signing import SKEW, Verdict, sign, verify

NOW = datetime(2024, 5, 1, 8, 34, 40, tzinfo=UTC)
TS = str(int(NOW.timestamp()))
SECRET = b"s3cret"
BODY = (
    b'{"events":[{"name":"$install","props":{"city":"\xd8\xaa\xd9\x87\xd8\xb1\xd8\xa7\xd9\x86"}}]}'
)


def check(**kw: object) -> Verdict:
    base: dict[str, object] = {
        "secrets": SECRET,
        "body": BODY,
        "timestamp": TS,
        "signature": sign(SECRET, BODY, TS),
        "now": NOW,
    }
    return verify(**(base | kw))  # type: ignore[arg-type]


def test_wire_format_is_pinned() -> None:
    expected = hmac.new(SECRET, BODY + b"." + TS.encode(), hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, TS) == sign("s3cret", BODY, int(TS)) == expected
    assert SKEW == timedelta(minutes=5)


def test_valid_signature() -> None:
    v = check()
    assert v.ok and v.code == "ok" and v.replay_key == sign(SECRET, BODY, TS)


def test_upper_case_hex_and_whitespace_are_accepted() -> None:
    assert check(signature=" " + sign(SECRET, BODY, TS).upper() + " ").ok
    assert check(timestamp=f" {TS} ").ok


@pytest.mark.parametrize(
    ("field", "value"),
    [("timestamp", None), ("timestamp", ""), ("signature", None), ("signature", "")],
)
def test_missing(field: str, value: str | None) -> None:
    assert check(**{field: value}) == Verdict("missing")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp", "17145524.80"),
        ("timestamp", "-1714552480"),
        ("timestamp", "+1714552480"),
        ("timestamp", "1e9"),
        ("timestamp", "١٧١٤٥٥٢٤٨٠"),  # Arabic-Indic digits are digits, but not ASCII
        ("timestamp", "9" * 13),
        ("timestamp", "\x00"),
        ("signature", "zz" * 32),
        ("signature", "ab" * 31),
        ("signature", "ab" * 33),
        ("signature", "x" * 100_000),
    ],
)
def test_malformed(field: str, value: str) -> None:
    assert check(**{field: value}) == Verdict("malformed")


def test_far_future_timestamp_is_stale_not_a_crash() -> None:
    ts = "9" * 12
    assert check(timestamp=ts, signature=sign(SECRET, BODY, ts)) == Verdict("stale")
    assert check(timestamp="0", signature=sign(SECRET, BODY, "0")) == Verdict("stale")


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (SKEW, True),
        (-SKEW, True),
        (SKEW + timedelta(microseconds=1), False),
        (-SKEW - timedelta(microseconds=1), False),
        (timedelta(0), True),
    ],
)
def test_skew_is_inclusive(offset: timedelta, ok: bool) -> None:
    v = check(now=NOW + offset)
    assert v.ok is ok
    assert v.code == ("ok" if ok else "stale")


def test_custom_skew() -> None:
    assert check(now=NOW + timedelta(minutes=2), skew=timedelta(minutes=1)).code == "stale"


@pytest.mark.parametrize(
    "change",
    [
        {"body": BODY + b" "},
        {"body": b""},
        {"secrets": b"other"},
        {"timestamp": str(int(TS) + 1)},
        {"signature": "0" * 64},
    ],
)
def test_tampering_is_a_bad_signature(change: dict[str, object]) -> None:
    assert check(**change) == Verdict("bad_signature")


def test_empty_secret_never_verifies() -> None:
    assert check(secrets=b"", signature=sign(b"", BODY, TS)).code == "bad_signature"
    assert check(secrets=[], signature=sign(b"", BODY, TS)).code == "bad_signature"


def test_rotation_accepts_either_secret() -> None:
    assert check(secrets=[b"new", SECRET]).ok
    assert check(secrets=(b"new", "s3cret")).ok
    assert not check(secrets=[b"new", b"older"]).ok


def test_replay_is_refused_only_after_a_valid_signature() -> None:
    first = check()
    assert first.ok
    seen = {first.replay_key}
    assert check(seen=seen) == Verdict("replay")
    assert check(seen=seen, body=BODY + b"x") == Verdict("bad_signature")
    later = str(int(TS) + 1)
    assert check(seen=seen, timestamp=later, signature=sign(SECRET, BODY, later)).ok


def test_replay_key_is_case_insensitive() -> None:
    seen = {sign(SECRET, BODY, TS)}
    assert check(seen=seen, signature=sign(SECRET, BODY, TS).upper()).code == "replay"


@given(st.binary(max_size=512), st.integers(min_value=0, max_value=4_000_000_000))
def test_round_trip_property(body: bytes, ts: int) -> None:
    now = datetime.fromtimestamp(ts, UTC)
    sig = sign(SECRET, body, ts)
    assert verify(secrets=SECRET, body=body, timestamp=str(ts), signature=sig, now=now).ok
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    v = verify(secrets=SECRET, body=body, timestamp=str(ts), signature=flipped, now=now)
    assert v.code == "bad_signature"


@given(st.one_of(st.none(), st.text(max_size=80)), st.one_of(st.none(), st.text(max_size=80)))
def test_never_raises(timestamp: str | None, signature: str | None) -> None:
    v = verify(secrets=SECRET, body=BODY, timestamp=timestamp, signature=signature, now=NOW)
    assert v.code in ("missing", "malformed", "stale", "bad_signature")
