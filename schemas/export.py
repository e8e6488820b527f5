"""`python -m schemas.export [DIR]` writes the JSON Schema of each wire format, generated from the models, to
DIR (`docs/schemas` by default); a test regenerates them in memory and compares, so they never drift."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import TypeAdapter

from schemas.deadletter import DeadLetter
from schemas.events import DomainEvent
from schemas.inbox import InboxCommand
from schemas.notifications import EmailNotification, InAppNotification, PushNotification, SmsNotification
from schemas.preferences import PreferencesUpdate
from schemas.rules import RuleSet
from schemas.status import DeliveryStatus
from schemas.users import ProfileUpdate
from schemas.websocket import ClientFrame, ServerFrame

DEFAULT_DIRECTORY: Final = Path("docs") / "schemas"
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

# File name (without `.json`) → the model, or annotated union of models, of what travels there.
WIRE_FORMATS: Final[dict[str, Any]] = {
    "event": DomainEvent,  # herald.events
    "notification.inapp": InAppNotification,  # herald.deliver.<channel>
    "notification.email": EmailNotification,
    "notification.push": PushNotification,
    "notification.sms": SmsNotification,
    "status": DeliveryStatus,  # herald.status
    "dead-letter": DeadLetter,  # herald.dlq
    "websocket.client": ClientFrame,  # frames a client sends the gateway
    "websocket.server": ServerFrame,  # frames the gateway sends
    "rules": RuleSet,  # the rules topic (and file)
    "profile": ProfileUpdate,  # herald.users: a profile, whole or in part
    "preferences": PreferencesUpdate,  # herald.preferences: preferences, whole or in part
    "inbox.command": InboxCommand,  # herald.inbox.commands: a client's read/archive change, for the worker
}


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one wire format, as pydantic generates it for validating input."""
    generated = TypeAdapter(WIRE_FORMATS[name]).json_schema()
    return {"$schema": DIALECT, "$id": f"{name}.json", **generated}


def rendered() -> dict[str, str]:
    """Each schema file's name and content, exactly as written."""
    return {
        f"{name}.json": json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n"
        for name in WIRE_FORMATS
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    directory = Path(args[0]) if args else DEFAULT_DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, text in rendered().items():
        (directory / file_name).write_text(text, encoding="utf-8")
    print(f"wrote {len(WIRE_FORMATS)} JSON Schemas to {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
