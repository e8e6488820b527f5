from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.routing.sms_segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    SmsEncoding,
    SmsSegments,
    count_segments,
    encoding_of,
)

GSM7 = SmsEncoding.GSM7
UCS2 = SmsEncoding.UCS2


def test_the_alphabet_is_the_gsm_03_38_basic_set_and_extension_table() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes less the escape
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert {"@", "£", "Δ", "ß", "¿", "à", "\n", "\r"} <= GSM7_BASIC
    assert {"€", "[", "]", "{", "}", "~", "|", "^", "\\"} <= GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SmsSegments(GSM7, 0, 1)),
        ("a" * 160, SmsSegments(GSM7, 160, 1)),
        ("a" * 161, SmsSegments(GSM7, 161, 2)),
        ("a" * 306, SmsSegments(GSM7, 306, 2)),
        ("a" * 307, SmsSegments(GSM7, 307, 3)),
        ("€", SmsSegments(GSM7, 2, 1)),
        ("€" * 80, SmsSegments(GSM7, 160, 1)),
        ("€" * 80 + "a", SmsSegments(GSM7, 161, 2)),
        ("Ärger über Öl à 5£? ¿Qué?", SmsSegments(GSM7, 25, 1)),
        ("¡Sí!", SmsSegments(UCS2, 4, 1)),  # í is not in GSM-7 (ì is)
        ("ж" * 70, SmsSegments(UCS2, 70, 1)),
        ("ж" * 71, SmsSegments(UCS2, 71, 2)),
        ("ж" * 134, SmsSegments(UCS2, 134, 2)),
        ("ж" * 135, SmsSegments(UCS2, 135, 3)),
        # An emoji forces UCS-2 and is a surrogate pair: two code units.
        ("Hi 👋", SmsSegments(UCS2, 5, 1)),
        ("a" * 68 + "😀", SmsSegments(UCS2, 70, 1)),
        ("a" * 69 + "😀", SmsSegments(UCS2, 71, 2)),
        ("😀" * 35, SmsSegments(UCS2, 70, 1)),
        ("😀" * 36, SmsSegments(UCS2, 72, 2)),
        # A lowercase ç is not in GSM-7 (only Ç is), nor are curly quotes.
        ("ça", SmsSegments(UCS2, 2, 1)),
        ("it\u2019s", SmsSegments(UCS2, 4, 1)),
    ],
)
def test_segment_counts(text: str, expected: SmsSegments) -> None:
    assert count_segments(text) == expected


def test_an_escape_pair_is_never_split_between_parts() -> None:
    # 152 + 2 fits 153 only by splitting the €: it moves whole to the second part, which then overflows.
    text = "a" * 152 + "€" + "a" * 152
    assert count_segments(text) == SmsSegments(GSM7, 306, 3)


def test_a_surrogate_pair_is_never_split_between_parts() -> None:
    text = "a" * 66 + "😀" + "a" * 66
    assert count_segments(text) == SmsSegments(UCS2, 134, 3)


gsm_basic_text = st.text(alphabet=sorted(GSM7_BASIC), max_size=700)


@settings(max_examples=200, deadline=None)
@given(gsm_basic_text)
def test_plain_gsm_text_is_one_part_up_to_160_then_153_a_part(text: str) -> None:
    result = count_segments(text)
    assert result.encoding is GSM7
    assert result.units == len(text)
    expected = 1 if len(text) <= 160 else math.ceil(len(text) / 153)
    assert result.segments == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_gets_an_encoding_and_at_least_as_many_parts_as_its_units_need(text: str) -> None:
    result = count_segments(text)
    assert result.encoding is encoding_of(text)
    single, part = (160, 153) if result.encoding is GSM7 else (70, 67)
    if result.units <= single:
        assert result.segments == 1
    else:
        assert math.ceil(result.units / part) <= result.segments <= math.ceil(result.units / (part - 1))
    if result.encoding is UCS2:
        assert result.units == len(text.encode("utf-16-le")) // 2


_MIXED = st.text(
    alphabet=st.sampled_from([*sorted(GSM7_BASIC | GSM7_EXTENSION), "é", "\u2019", "😀", "\ud800", "中"]),
    max_size=400,
)


@settings(max_examples=300, deadline=None)
@given(_MIXED)
def test_the_units_are_each_characters_size_summed(text: str) -> None:
    # What the counter computes without a per-character loop, against the definition: GSM-7 counts an
    # extension character as two septets, UCS-2 a character outside the BMP as two code units.
    result = count_segments(text)
    if result.encoding is GSM7:
        expected = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
    else:
        expected = sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)
    assert result.units == expected
