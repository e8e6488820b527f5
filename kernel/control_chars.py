"""Control characters taken out of text meant for a person: C0 and C1 controls (NUL, ESC, DEL, …) and the
bidirectional embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069) that reorder text.

Event data reaches subjects, titles, SMS texts and terminals through templates; these characters can forge a
terminal's output (escape sequences), an email header, or text that reads otherwise than it is stored.
"""

from __future__ import annotations

from functools import cache

_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_LINE_BREAKS = (0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029)  # LF VT FF CR NEL LS PS


@cache
def _table(keep: str) -> dict[int, str | None]:
    table: dict[int, str | None] = dict.fromkeys(_CONTROLS + _BIDI)
    table |= dict.fromkeys((0x09, *_LINE_BREAKS), " ")  # not kept: a space, so words stay apart
    if "\n" in keep:
        table |= dict.fromkeys(_LINE_BREAKS, "\n")
    if "\t" in keep:
        table[0x09] = "\t"
    return table


def strip_controls(text: str, *, keep: str = "") -> str:
    """`text` without control or bidi-override characters. Line breaks and tabs become spaces unless `keep`
    holds "\\n" (CR LF, CR and the other line breaks then become newlines) or "\\t"."""
    if "\n" in keep:
        text = text.replace("\r\n", "\n")
    return text.translate(_table(keep))
