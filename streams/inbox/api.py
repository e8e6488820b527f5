"""The inbox's internal endpoint on the worker's ops server: gateways read a user's inbox here (the unread
count and what a reconnecting socket missed, pages of `list`). Any worker answers: one that does not own the
user's partition forwards the request, once, to the one that does, as Faust's table routing does.

Guarded by HERALD_INTERNAL_SECRET (a bearer token shared by gateways and workers); without it the endpoint
is not served. Bodies carry the user id, never the URL, so no proxy or log line holds it."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from kernel.settings import GATEWAY_FRAME_OVERHEAD_BYTES
from schemas.base import WireModel
from schemas.frames import Page, fit, inbox_body, notification_frame
from schemas.inbox import PageRequest, SessionRequest
from streams.inbox.model import Index, Line
from streams.inbox.steps import Reader, items
from streams.state.directory import home_partition

log = logging.getLogger("herald.inbox")

M = TypeVar("M", bound=WireModel)

FORWARDED = "x-herald-forwarded"


class Ownership:
    """Where a user's inbox is now: on this worker (and readable), on another (its URL), or unknown."""

    def __init__(self, app: Any, inapp_topic: str, changelog_topic: str, partitions: int) -> None:
        self._app = app
        self._inapp = inapp_topic
        self._changelog = changelog_topic
        self._partitions = partitions

    def partition(self, user_id: str) -> int:
        return home_partition(user_id, self._partitions)

    def ready(self) -> bool:
        return not (self._app.rebalancing or self._app.in_recovery)

    def mine(self, partition: int) -> bool:
        return any(
            tp.topic == self._inapp and tp.partition == partition
            for tp in self._app.assignor.assigned_actives()
        )

    def owner_url(self, partition: int) -> str | None:
        for url, topics in self._app.assignor.table_metadata(self._changelog).items():
            if partition in topics.get(self._changelog, ()):
                return str(url)
        return None


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
        self._ownership = ownership
        self._read = read
        self._authorization = f"Bearer {secret}".encode()
        self._room = reply_bytes - GATEWAY_FRAME_OVERHEAD_BYTES
        self._own_url = own_url.rstrip("/")
        self._timeout = timeout_seconds
        self._http: httpx.AsyncClient | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/internal/inbox/session", self._endpoint(SessionRequest, self.session), methods=["POST"]),
            Route("/internal/inbox/page", self._endpoint(PageRequest, self.page), methods=["POST"]),
        ]

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

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

    # --- HTTP --------------------------------------------------------------------------------------------
    def _endpoint(
        self, model: type[M], answer: Callable[[M], bytes]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, self._authorization):
                return _json({"error": "unauthorized"}, 401)
            try:
                body = await request.body()
                parsed = model.model_validate_json(body)
            except ValidationError:
                return _json({"error": "invalid_request"}, 400)
            except ClientDisconnect:
                return Response(status_code=400)
            user_id: str = parsed.user_id  # type: ignore[attr-defined]
            partition = self._ownership.partition(user_id)
            if self._ownership.ready() and self._ownership.mine(partition):
                return Response(answer(parsed), media_type="application/json")
            owner = self._ownership.owner_url(partition) if self._ownership.ready() else None
            if request.headers.get(FORWARDED) or owner is None or owner.rstrip("/") == self._own_url:
                return _json({"error": "not_ready"}, 503, {"Retry-After": "1"})
            return await self._forward(owner, request.url.path, body)

        return endpoint

    async def _forward(self, owner: str, path: str, body: bytes) -> Response:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        try:
            answer = await self._http.post(
                owner.rstrip("/") + path,
                content=body,
                headers={
                    "authorization": self._authorization.decode(),
                    "content-type": "application/json",
                    FORWARDED: "1",
                },
            )
        except httpx.HTTPError as exc:
            log.warning("cannot reach the inbox's owner: %s", type(exc).__name__)
            return _json({"error": "not_ready"}, 503, {"Retry-After": "1"})
        return Response(answer.content, answer.status_code, media_type="application/json")


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")
