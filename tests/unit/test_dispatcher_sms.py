"""SMS length as a carrier counts it (GSM 03.38 / UCS-2), and E.164 phone numbers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dispatcher.sms import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    MULTIPART,
    SINGLE,
    char_units,
    count,
    encoding_of,
    national_phone,
    normalise_phone,
    split_segments,
)

BASIC = sorted(GSM7_BASIC)
EXTENSION = sorted(GSM7_EXTENSION)
gsm_text = st.text(alphabet=st.sampled_from(BASIC + EXTENSION), max_size=700)
basic_text = st.text(alphabet=st.sampled_from(BASIC), max_size=700)
persian = st.text(alphabet=st.characters(min_codepoint=0x0621, max_codepoint=0x06CC), max_size=300)
any_text = st.text(max_size=500)


def units_of(text: str) -> int:
    if encoding_of(text) == "gsm7":
        return sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    return len(text.encode("utf-16-le")) // 2


# --- the tables -------------------------------------------------------------------


def test_the_tables_hold_the_3gpp_alphabet() -> None:
    assert len(GSM7_BASIC) == 127  # 128 positions, 0x1B is the escape
    assert GSM7_EXTENSION == frozenset("\f^{}\\[~]|€")
    assert not GSM7_BASIC & GSM7_EXTENSION
    for c in "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà":
        assert c in GSM7_BASIC
    for c in "`çáíóúâêîôûãõ\t":
        assert c not in GSM7_BASIC and c not in GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "gsm7", 0, 1),
        ("a" * 160, "gsm7", 160, 1),
        ("a" * 161, "gsm7", 161, 2),
        ("a" * 306, "gsm7", 306, 2),
        ("a" * 307, "gsm7", 307, 3),
        ("€" * 80, "gsm7", 160, 1),
        # 81 two-septet characters: 76 fit a 153-septet segment (an escape pair is
        # never split), the other 5 the second.
        ("€" * 81, "gsm7", 162, 2),
        ("a" * 152 + "€" + "a" * 7, "gsm7", 161, 2),
        ("€" * 153, "gsm7", 306, 3),  # 76 + 76 + 1: a plain division would say 2
        ("سلام" * 17 + "سل", "ucs2", 70, 1),
        ("س" * 71, "ucs2", 71, 2),
        ("س" * 134, "ucs2", 134, 2),
        ("س" * 135, "ucs2", 135, 3),
        ("😀" * 35, "ucs2", 70, 1),
        ("😀" * 36, "ucs2", 72, 2),
        ("a" * 159 + "ç", "ucs2", 160, 3),  # one non-GSM character turns the text UCS-2
    ],
)
def test_known_lengths(text: str, encoding: str, units: int, segments: int) -> None:
    length = count(text)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)


def test_an_escape_pair_is_never_split_across_segments() -> None:
    # 152 septets then a two-septet character: it moves whole to the second segment.
    text = "a" * 152 + "€" + "b" * 10
    parts = split_segments(text)
    assert parts == ["a" * 152, "€" + "b" * 10]
    assert count(text).remaining == 153 - 12


def test_a_surrogate_pair_is_never_split_across_segments() -> None:
    text = "س" * 66 + "😀" + "س" * 4
    assert split_segments(text) == ["س" * 66, "😀سسسس"]
    assert count(text).segments == 2


def test_persian_otp_is_one_ucs2_segment() -> None:
    length = count("کد ورود شما ۴۸۲۱۳ است. آن را به کسی ندهید.")
    assert length.encoding == "ucs2" and length.segments == 1
    assert length.per_segment == 70 and length.remaining == 70 - length.units


# --- properties ----------------------------------------------------------------------


@given(gsm_text)
def test_gsm_text_is_gsm7_and_counts_extension_twice(text: str) -> None:
    length = count(text)
    assert length.encoding == "gsm7"
    assert length.units == len(text) + sum(c in GSM7_EXTENSION for c in text)


@given(any_text)
def test_ucs2_exactly_when_a_character_is_outside_the_alphabet(text: str) -> None:
    outside = any(c not in GSM7_BASIC and c not in GSM7_EXTENSION for c in text)
    assert (count(text).encoding == "ucs2") == outside


@given(persian.filter(bool))
def test_persian_is_ucs2(text: str) -> None:
    assert count(text).encoding == "ucs2"


@given(st.one_of(gsm_text, persian, any_text))
def test_one_segment_exactly_when_it_fits_the_single_limit(text: str) -> None:
    length = count(text)
    assert length.units == units_of(text)
    assert (length.segments == 1) == (length.units <= SINGLE[length.encoding])


@given(st.one_of(gsm_text, persian, any_text))
def test_segments_join_back_and_each_fits(text: str) -> None:
    length = count(text)
    parts = split_segments(text)
    assert "".join(parts) == text
    assert len(parts) == length.segments
    if length.segments > 1:
        capacity = MULTIPART[length.encoding]
        sizes = [sum(char_units(c, length.encoding) for c in p) for p in parts]
        assert all(0 < s <= capacity for s in sizes)
        # Greedy, as carriers pack: no segment could have taken the next character.
        for part, size, following in zip(parts, sizes, parts[1:], strict=False):
            assert size + char_units(following[0], length.encoding) > capacity, part
        assert length.remaining == capacity - sizes[-1]
        # Never fewer than a plain division, never more than one unit lost a segment.
        assert length.segments >= math.ceil(length.units / capacity)
        assert length.segments <= math.ceil(length.units / (capacity - 1))


@given(st.one_of(gsm_text, persian, any_text), st.characters())
def test_appending_never_makes_a_text_shorter(text: str, extra: str) -> None:
    assert count(text + extra).segments >= count(text).segments


@given(basic_text)
def test_basic_only_text_divides_exactly(text: str) -> None:
    length = count(text)
    expected = 1 if len(text) <= 160 else math.ceil(len(text) / 153)
    assert length.segments == expected


# --- phone numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "09121234567",
        "9121234567",
        "+989121234567",
        "989121234567",
        "00989121234567",
        "+98 912 123 4567",
        "0912-123-4567",
        "۰۹۱۲۱۲۳۴۵۶۷",  # Persian digits
        "٠٩١٢١٢٣٤٥٦٧",  # Arabic-Indic digits
    ],
)
def test_iranian_mobile_forms_normalise_to_e164(raw: str) -> None:
    assert normalise_phone(raw) == "+989121234567"


@pytest.mark.parametrize("raw", ["", "  ", "12", "0912", "hello", "+98912123456789", "0" * 70])
def test_not_a_phone_number(raw: str) -> None:
    assert normalise_phone(raw) is None


def test_other_countries_keep_their_code() -> None:
    assert normalise_phone("+44 20 7946 0958") == "+442079460958"
    assert normalise_phone("+1 650 253 0000") == "+16502530000"
    assert normalise_phone("020 7946 0958", "GB") == "+442079460958"


def test_national_form_for_gateways() -> None:
    assert national_phone("+989121234567") == "09121234567"


@given(st.integers(min_value=9010000000, max_value=9399999999))
def test_every_form_of_a_valid_iranian_mobile_agrees(number: int) -> None:
    e164 = normalise_phone(f"+98{number}")
    if e164 is None:
        return  # not an allocated range
    for form in (f"0{number}", f"98{number}", f"0098{number}", str(number)):
        assert normalise_phone(form) == e164
    assert normalise_phone(national_phone(e164)) == e164
