"""A provider webhook's request body, read up to a limit: refused before reading when its declared length is
over it, cut off as soon as a chunked body passes it."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from kernel.errors import WebhookRefused
from schemas.webhooks import WebhookRefusal


async def read_body(request: Request, limit: int) -> bytes:
    """The body, up to `limit` bytes: a declared length over it is refused before reading, a chunked body as
    soon as it passes it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise WebhookRefused(WebhookRefusal.TOO_LARGE, 413)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise WebhookRefused(WebhookRefusal.TOO_LARGE, 413)
            chunks.append(chunk)
    except ClientDisconnect:
        # The client left, or the server's body deadline closed the connection (kernel/read_limits.py).
        raise WebhookRefused(WebhookRefusal.INCOMPLETE_BODY, 400) from None
    return b"".join(chunks)
