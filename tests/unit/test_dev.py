"""`herald dev` prints the emails its mailbox receives: never an escape sequence or a bidi override."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from streams.cli.dev import _show_email
from tests.unit.test_control_chars import control_characters

HOSTILE = "\x1b[2J\x1b]0;owned\x07Hi\u202e\u2066\x00\x9b"


def test_a_received_email_is_printed_without_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    mail = EmailMessage()
    mail["To"] = "ada@example.com"
    # Not what Herald renders (its subjects are clean): any client may send to the dev mailbox.
    mail["Subject"] = "Order\u202eA-1"
    mail.set_content(f"Hello,\n{HOSTILE}\n\tBye\r\n")
    _show_email(mail)
    out = capsys.readouterr().out
    assert not control_characters(out), repr(out)
    assert "OrderA-1" in out and "[2J]0;ownedHi" in out and "\tBye" in out
