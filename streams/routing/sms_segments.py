"""SMS encoding and segment count: GSM-7 when every character is in the GSM 03.38 alphabet, else UCS-2.

Counts what would be sent as given: no normalisation and no "smart encoding" look-alike replacement (a
decomposed `é` or a curly quote forces UCS-2 here even if a provider would rewrite it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# GSM 03.38 basic character set (3GPP TS 23.038 §6.2.1), in code order, without the escape at 0x1B.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each is sent as the escape plus one septet, so it counts as two.
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE = 160
GSM7_PART = 153  # 7 septets of each part go to the concatenation header
UCS2_SINGLE = 70
UCS2_PART = 67


class SmsEncoding(StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


@dataclass(frozen=True)
class SmsSegments:
    encoding: SmsEncoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


# Either table: a text of these characters alone goes as GSM-7.
_GSM7: frozenset[str] = GSM7_BASIC | GSM7_EXTENSION


def encoding_of(text: str) -> SmsEncoding:
    return SmsEncoding.GSM7 if _GSM7.issuperset(text) else SmsEncoding.UCS2


def _units(text: str, encoding: SmsEncoding) -> int:
    if encoding is SmsEncoding.GSM7:
        return len(text) + sum(text.count(ch) for ch in GSM7_EXTENSION.intersection(text))
    # UTF-16 code units: a character outside the Basic Multilingual Plane (most emoji) is a surrogate pair.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _unit_sizes(text: str, encoding: SmsEncoding) -> list[int]:
    """The size of each character in units; a character is never split between two parts."""
    if encoding is SmsEncoding.GSM7:
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def count_segments(text: str) -> SmsSegments:
    """The encoding, the length in its units, and the number of parts the text is sent as. An empty text is
    one (empty) part: it still costs a message. (Counted per character only past one part's length: a
    routed SMS counts its text, and most fit in one.)"""
    encoding = encoding_of(text)
    units = _units(text, encoding)
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding is SmsEncoding.GSM7 else (UCS2_SINGLE, UCS2_PART)
    if units <= single:
        return SmsSegments(encoding, units, 1)
    # Fill parts greedily: an escape pair or a surrogate pair that does not fit moves whole to the next part.
    segments, used = 1, 0
    for size in _unit_sizes(text, encoding):
        if used + size > part:
            segments += 1
            used = 0
        used += size
    return SmsSegments(encoding, units, segments)
