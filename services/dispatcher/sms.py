"""SMS length as a carrier counts it, and phone numbers in E.164. Pure.

A text goes out in the GSM 03.38 7-bit default alphabet (3GPP TS 23.038) when every
character is in its basic table or its extension table, else in UCS-2. The basic table
costs one septet a character; the extension table (``^{}\\[~]|€`` and form feed) costs
two, an escape and the character. UCS-2 counts UTF-16 code units, so a character outside
the Basic Multilingual Plane (most emoji) costs two. Persian and Arabic text is UCS-2.

One segment holds 160 septets or 70 code units. A longer text is sent as a concatenated
SMS whose user-data header leaves 153 septets or 67 code units a segment, and a carrier
never splits an escape pair or a surrogate pair across two segments — so a segment may
end one unit short, and the count is made by packing characters, not by dividing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import phonenumbers

Encoding = Literal["gsm7", "ucs2"]

# 3GPP TS 23.038 §6.2.1, in table order (0x1B, the escape, is not a character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# §6.2.1.1: reached through the escape, so each costs two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE = {"gsm7": 160, "ucs2": 70}
MULTIPART = {"gsm7": 153, "ucs2": 67}


@dataclass(frozen=True, slots=True)
class SmsLength:
    """How a carrier sends a text: its encoding, its length in units (septets for
    gsm7, UTF-16 code units for ucs2), how many segments, each segment's capacity
    (160/70 for one segment, 153/67 for a concatenated message) and how many units
    are left in the last one before another segment is needed."""

    encoding: Encoding
    units: int
    segments: int
    per_segment: int
    remaining: int


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM 7-bit default alphabet
    (basic or extension table)."""
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def encoding_of(text: str) -> Encoding:
    return "gsm7" if is_gsm7(text) else "ucs2"


def char_units(char: str, encoding: Encoding) -> int:
    """What one character costs in ``encoding``: 1 or 2 septets, 1 or 2 code units."""
    if encoding == "gsm7":
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def split_segments(text: str) -> list[str]:
    """The parts a carrier sends ``text`` as, in order; they join back to ``text``.
    An empty text is one empty segment (it would still be one message)."""
    encoding = encoding_of(text)
    costs = [char_units(c, encoding) for c in text]
    if sum(costs) <= SINGLE[encoding]:
        return [text]
    capacity = MULTIPART[encoding]
    parts: list[str] = []
    start, used = 0, 0
    for i, cost in enumerate(costs):
        if used + cost > capacity:
            parts.append(text[start:i])
            start, used = i, 0
        used += cost
    parts.append(text[start:])
    return parts


def count(text: str) -> SmsLength:
    """The carrier's count of ``text`` (see the module docstring)."""
    encoding = encoding_of(text)
    units = sum(char_units(c, encoding) for c in text)
    if units <= SINGLE[encoding]:
        per_segment = SINGLE[encoding]
        return SmsLength(encoding, units, 1, per_segment, per_segment - units)
    parts = split_segments(text)
    per_segment = MULTIPART[encoding]
    last = sum(char_units(c, encoding) for c in parts[-1])
    return SmsLength(encoding, units, len(parts), per_segment, per_segment - last)


def normalise_phone(raw: str, default_region: str = "IR") -> str | None:
    """``raw`` as an E.164 number (``+989121234567``), or None when it is not a valid
    phone number. National forms are read in ``default_region``: for Iran ``0912…``,
    ``912…``, ``98912…`` (the country code without its plus, as users and some
    gateways write it), ``0098912…`` and ``+98 912 …`` all give ``+98912…``; Persian
    and Arabic-Indic digits are read as digits."""
    # Persian (U+06F0…) and Arabic-Indic digits, as Iranian keyboards type them.
    text = "".join(str(int(c)) if c.isdecimal() else c for c in raw.strip())
    if not text or len(text) > 64:
        return None
    candidates = [text]
    country = phonenumbers.country_code_for_region(default_region)  # 0 when unknown
    digits = "".join(c for c in text if c.isdecimal())
    if country and not text.startswith(("+", "00")) and digits.startswith(str(country)):
        candidates.insert(0, "+" + digits)
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, default_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def national_phone(e164: str) -> str:
    """An E.164 number in its national dialling form without spaces (``09121234567``
    for ``+989121234567``), the form Iranian gateways such as Kavenegar document."""
    number = phonenumbers.parse(e164, None)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return "".join(c for c in national if c.isdigit())
