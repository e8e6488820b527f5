"""Control and bidi-override characters out of text meant for a person; line breaks and tabs as asked."""

from __future__ import annotations

from kernel.control_chars import strip_controls

C0 = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\v\f\r")
C1 = "".join(chr(c) for c in range(0x7F, 0xA0) if c != 0x85)
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_every_c0_c1_and_bidi_override_character_goes() -> None:
    assert strip_controls(f"a{C0}b{C1}c{BIDI}d") == "abcd"
    assert strip_controls(f"a{C0}b{C1}c{BIDI}d", keep="\n\t") == "abcd"


def test_an_escape_sequence_loses_its_escape() -> None:
    assert strip_controls("\x1b[2J\x1b]0;title\x07ok") == "[2J]0;titleok"


def test_line_breaks_and_tabs_are_spaces_on_one_line_and_kept_on_several() -> None:
    text = "a\r\nb\rc\nd\te\vf\fg\x85h\u2028i\u2029j"
    assert strip_controls(text) == "a  b c d e f g h i j"
    assert strip_controls(text, keep="\n") == "a\nb\nc\nd e\nf\ng\nh\ni\nj"
    assert strip_controls(text, keep="\n\t") == "a\nb\nc\nd\te\nf\ng\nh\ni\nj"


def test_marks_joiners_and_other_scripts_stay() -> None:
    text = "שלום\u200f · مرحبا\u061c · 👩\u200d💻 · Ünïcødé · 東京"
    assert strip_controls(text) == text


def control_characters(text: str) -> list[str]:
    """What `strip_controls` takes out (newlines and tabs aside), for the tests of what reaches a terminal."""
    return [
        c
        for c in text
        if (ord(c) < 0x20 and c not in "\n\t")
        or 0x7F <= ord(c) < 0xA0
        or 0x202A <= ord(c) <= 0x202E
        or 0x2066 <= ord(c) <= 0x2069
    ]
