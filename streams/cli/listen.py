"""`herald listen`: a small WebSocket client that prints what the gateway sends one user."""

from __future__ import annotations

import json
from typing import Any

import click
import websockets

from kernel.control_chars import strip_controls


def frame_line(message: dict[str, Any]) -> str:
    """The line a frame is printed as: a notification's title and body, any other frame as JSON. Either way
    no control character reaches the terminal (JSON escapes them), whoever produced the notification."""
    if message.get("type") == "notification":
        notification = message["notification"]
        title, body = (strip_controls(str(notification[part])) for part in ("title", "body"))
        return f"🔔 {title} — {body}"
    return json.dumps(message)


async def listen_forever(url: str, token: str) -> None:
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as socket:
        async for frame in socket:
            click.echo(frame_line(json.loads(frame)))
