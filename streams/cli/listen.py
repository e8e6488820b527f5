"""`herald listen`: a small WebSocket client that prints what the gateway sends one user."""

from __future__ import annotations

import json

import click
import websockets


async def listen_forever(url: str, token: str) -> None:
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as socket:
        async for frame in socket:
            message = json.loads(frame)
            if message.get("type") == "notification":
                notification = message["notification"]
                click.echo(f"🔔 {notification['title']} — {notification['body']}")
            else:
                click.echo(json.dumps(message))
