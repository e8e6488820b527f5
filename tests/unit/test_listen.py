"""`herald listen` prints each frame as one line: never an escape sequence or a bidi override."""

from __future__ import annotations

import json

from streams.cli.listen import frame_line
from tests.unit.test_control_chars import control_characters

HOSTILE = "\x1b[2J\x1b]0;owned\x07Hi\u202e\u2066\x00\x9b"


def test_a_notification_is_printed_without_control_characters() -> None:
    frame = {"type": "notification", "notification": {"title": f"T{HOSTILE}", "body": f"B\n{HOSTILE}"}}
    line = frame_line(frame)
    assert not control_characters(line) and "\n" not in line, repr(line)
    assert line.startswith("🔔 T[2J]0;ownedHi — B ")


def test_other_frames_are_json_which_escapes_them() -> None:
    line = frame_line({"type": "error", "message": HOSTILE})
    assert not control_characters(line) and json.loads(line)["message"] == HOSTILE
