"""The inbox's internal endpoint on the worker's ops server: gateways read a user's inbox here (the unread
count and what a reconnecting socket missed, pages of `list`), from the worker that owns the user's partition
(`streams.ops.internal`: the secret, and forwarding to the owner)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.routing import Route

from kernel.settings import GATEWAY_FRAME_OVERHEAD_BYTES
from schemas.frames import Page, fit, inbox_body, notification_frame
from schemas.inbox import PageRequest, SessionRequest
from streams.inbox.model import Index, Line
from streams.inbox.steps import Reader, items
from streams.ops.internal import OwnerRoutes, Ownership


class InboxApi:
    def __init__(
        self,
        ownership: Ownership,
        read: Reader,
        *,
        secret: str,
        reply_bytes: int,
        own_url: str,
        timeout_seconds: float,
    ) -> None:
        self._read = read
        self._room = reply_bytes - GATEWAY_FRAME_OVERHEAD_BYTES
        self._routes = OwnerRoutes(ownership, secret=secret, own_url=own_url, timeout_seconds=timeout_seconds)

    def routes(self) -> list[Route]:
        return [
            self._routes.route("/internal/inbox/session", SessionRequest, self.session),
            self._routes.route("/internal/inbox/page", PageRequest, self.page),
        ]

    async def aclose(self) -> None:
        await self._routes.aclose()

    # --- answers (on the owner) --------------------------------------------------------------------------
    def session(self, request: SessionRequest) -> bytes:
        index = Index.load(self._read(request.user_id))
        unread = index.unread()
        reply: dict[str, Any] = {"seq": index.seq, "unread": unread}
        if request.since is None:
            return orjson.dumps(reply)
        missed = self._missed(index, request, unread)
        reply["recovered"] = missed is not None
        reply["missed"] = missed or []
        return orjson.dumps(reply)

    def _missed(self, index: Index, request: SessionRequest, unread: int) -> list[orjson.Fragment] | None:
        """What came after `since`, as notification frames; None if that point is not kept, or if what was
        missed is more than the socket's queue or a reply's byte budget holds: the client then lists."""
        assert request.since is not None
        lines = index.since(request.since)
        if lines is None or len(lines) > request.max_frames:
            return None
        room = self._room
        frames = []
        for item in items(self._read, request.user_id, lines):
            frame = notification_frame(item.raw, unread=unread, read=item.read)
            room -= len(frame) + 1
            if room < 0:
                return None
            frames.append(orjson.Fragment(frame))
        return frames

    def page(self, request: PageRequest) -> bytes:
        index = Index.load(self._read(request.user_id))
        lines: list[Line] = []
        more = False
        for line in index.newest_first(before=request.before, archived=request.archived):
            if len(lines) == request.limit:
                more = True
                break
            lines.append(line)
        found = items(self._read, request.user_id, lines)
        cursor = found[-1].notification_id if more and found else None
        page = fit(Page(found, cursor), self._room)
        return orjson.dumps({**inbox_body(page, unread=index.unread()), "seq": index.seq})
