"""docs/schemas/*.json are what `python -m schemas.export` generates from the models, valid JSON Schemas,
and they accept what Herald writes, the documented examples, and values a later version may add."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.preference_center import view
from gateway.protocol import (
    ProtocolError,
    ack_frame,
    error_frame,
    pong_frame,
    preferences_frame,
    refreshed_frame,
    welcome_frame,
)
from kernel.errors import PermanentDeliveryError
from schemas import frames as inbox_frames
from schemas.channels import Channel
from schemas.export import WIRE_FORMATS, main, rendered
from schemas.frames import Item, Page, inbox_body, notification_frame, update_frame
from schemas.notifications import InAppNotification
from schemas.preference_center import OfferedCategory, OfferedChannel
from schemas.preferences import Preferences
from schemas.reasons import DeliveryReason
from schemas.websocket import ErrorCode
from streams.runtime.deadletters import dead_letter

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8")))


def test_the_files_are_what_the_models_generate() -> None:
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in SCHEMAS.glob("*.json")}
    assert on_disk.keys() == rendered().keys(), "run `python -m schemas.export`"
    stale = [name for name, text in rendered().items() if on_disk[name] != text]
    assert stale == [], "run `python -m schemas.export`"


def test_the_export_writes_every_file(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 0
    assert {path.name: path.read_text(encoding="utf-8") for path in tmp_path.iterdir()} == rendered()


@pytest.mark.parametrize("name", WIRE_FORMATS)
def test_each_is_a_valid_json_schema(name: str) -> None:
    Draft202012Validator.check_schema(json.loads(rendered()[f"{name}.json"]))


def _examples(page: str) -> dict[str, Any]:
    """The JSON examples of a docs page, by the heading they follow."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    found = {}
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        block = re.search(r"```json\n(.*?)```", section, flags=re.DOTALL)
        if block is not None:
            found[section.splitlines()[0]] = json.loads(block.group(1))
    return found


@pytest.mark.parametrize(
    ("heading", "name"),
    [
        ("Domain event (`herald.events`)", "event"),
        ("User profile (`herald.users`, compacted, keyed by `user_id`)", "profile"),
        ("Notifications (`herald.deliver.<channel>`, keyed by user id)", "notification.inapp"),
        ("Delivery status (`herald.status`, keyed by user id)", "status"),
        ("Dead letter (`herald.dlq`)", "dead-letter"),
    ],
)
def test_the_documented_examples_are_valid(heading: str, name: str) -> None:
    validator(name).validate(_examples("WIRE-FORMATS.md")[heading])


def test_what_herald_writes_is_valid_and_a_later_reason_is_tolerated() -> None:
    letter = dead_letter(
        topic="herald.deliver.push",
        partition=0,
        offset=7,
        key=b"alice",
        value=b"{}",
        error=PermanentDeliveryError("FCM 404 UNREGISTERED", reason=DeliveryReason.UNREGISTERED),
        stage="push",
    )
    document = json.loads(letter.to_json())
    assert document["reason"] == "unregistered"
    validator("dead-letter").validate(document)
    # Consumers should tolerate values added later; the schema lets them through.
    validator("dead-letter").validate({**document, "reason": "added_later", "stage": "added_later"})


def _notification() -> InAppNotification:
    return InAppNotification(
        notification_id="ntf_1",
        event_id="evt-1",
        event_type="order.shipped",
        recipient="alice",
        occurred_at=NOW,
        created_at=NOW,
        title="Shipped",
        body="On its way",
    )


def test_every_frame_the_gateway_writes_is_valid() -> None:
    entry = Item("ntf_1", _notification().to_json(), read=True, archived=False)
    frames = [
        welcome_frame("alice", unread=1, expires_at=1795000000.5),
        welcome_frame("alice", unread=1, expires_at=1795000000, recovered=True, missed=2),
        welcome_frame("alice", unread=1, expires_at=1795000000, recovered=False),
        notification_frame(entry.raw, unread=1, read=True),
        inbox_frames.frame("inbox", "r1", **inbox_body(Page([entry], next_before=None), unread=0)),
        inbox_frames.frame("inbox", None, **inbox_body(Page([entry], next_before="ntf_1"), unread=0)),
        update_frame([entry], unread=0),
        ack_frame(unread=0, request_id="r2"),
        refreshed_frame(expires_at=1795003600, request_id=None),
        pong_frame("r3"),
        error_frame(ProtocolError(ErrorCode.INVALID_FRAME, "invalid fields: ids", "r4")),
    ]
    server = validator("websocket.server")
    for written in frames:
        server.validate(json.loads(written))
    assert not server.is_valid({"type": "ack", "v": 2, "unread": 0})


def test_the_documented_client_frames_are_valid() -> None:
    text = (ROOT / "docs" / "WEBSOCKET.md").read_text(encoding="utf-8")
    client_section = text.split("Client → server:", 1)[1]
    block = re.search(r"```json\n(.*?)```", client_section, flags=re.DOTALL)
    assert block is not None
    client = validator("websocket.client")
    frames = [json.loads(line) for line in block.group(1).splitlines()]
    assert len(frames) == 8
    for frame in frames:
        client.validate(frame)
    assert not client.is_valid({"type": "mark_read", "v": 1, "ids": []})


def test_the_preference_center_frames_documented_and_written_are_valid() -> None:
    text = (ROOT / "docs" / "WEBSOCKET.md").read_text(encoding="utf-8")
    section = text.split("## Preference center", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None
    documented = [json.loads(line) for line in block.group(1).splitlines()]
    client, server = validator("websocket.client"), validator("websocket.server")
    for frame in documented:
        (client if frame["type"].endswith("_preferences") else server).validate(frame)
    assert {frame["type"] for frame in documented} == {
        "get_preferences",
        "set_preferences",
        "preferences",
        "error",
    }
    assert not client.is_valid(
        {"type": "set_preferences", "v": 1, "changes": {"user_id": "bob", "muted": True}}
    )

    offered = [
        OfferedCategory(
            category="security", locked=True, channels=[OfferedChannel(channel=Channel.SMS, locked=True)]
        )
    ]
    stored = Preferences.model_validate_json(
        '{"user_id":"alice","channels":{"sms":false},"quiet_hours":{"sat":{"start":"23:00","end":"09:00"}}}'
    )
    written = preferences_frame(view(offered, stored), request_id="p1")
    server.validate(json.loads(written))
