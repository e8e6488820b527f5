"""The inbox over HTTP with the same bearer token as the socket: list, unread count and every change."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import TokenVerifier
from gateway.bearer import user_of
from gateway.inbox_service import InboxService
from gateway.metrics import GatewayMetrics
from kernel.errors import InboxUnavailable
from schemas.events import Identifier
from schemas.inbox import InboxAction
from schemas.websocket import Ids


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    before: Identifier | None = None
    archived: bool = False


class _Ids(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    ids: Ids


def _json(body: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code, headers, media_type="application/json")


class InboxHttp:
    """`GET /inbox`, `GET /inbox/unread`, `POST /inbox/<command>`."""

    def __init__(self, verifier: TokenVerifier, service: InboxService, metrics: GatewayMetrics) -> None:
        self._verifier = verifier
        self._service = service
        self._metrics = metrics

    def routes(self) -> list[Route]:
        return [
            Route("/inbox", self._list, methods=["GET"]),
            Route("/inbox/unread", self._unread, methods=["GET"]),
            Route("/inbox/{action}", self._change, methods=["POST"]),
        ]

    def _user(self, request: Request) -> str | Response:
        return user_of(request, self._verifier, self._metrics)

    def _unready(self) -> Response | None:
        # A change is answered on the feed: without it, the answer could go by unseen.
        return None if self._service.ready else _json({"error": "not_ready"}, 503, {"Retry-After": "2"})

    async def _list(self, request: Request) -> Response:
        user = self._user(request)
        if isinstance(user, Response):
            return user
        try:
            query = _Query.model_validate(dict(request.query_params))
        except ValidationError as exc:
            return _json({"error": "invalid_request", "fields": _fields(exc)}, 400)
        try:
            page = await self._service.page(
                user, limit=query.limit, before=query.before, archived=query.archived
            )
        except InboxUnavailable:
            return _unavailable()
        return _json(page)

    async def _unread(self, request: Request) -> Response:
        user = self._user(request)
        if isinstance(user, Response):
            return user
        try:
            return _json({"unread": await self._service.unread(user)})
        except InboxUnavailable:
            return _unavailable()

    async def _change(self, request: Request) -> Response:
        user = self._user(request)
        if isinstance(user, Response):
            return user
        try:
            action = InboxAction(request.path_params["action"])
        except ValueError:
            return _json({"error": "unknown_action"}, 404)
        if (unready := self._unready()) is not None:
            return unready
        try:
            if action is InboxAction.MARK_ALL_READ:
                unread = await self._service.change(user, action)
            else:
                body = _Ids.model_validate_json(await request.body())
                unread = await self._service.change(user, action, body.ids)
        except ValidationError as exc:
            return _json({"error": "invalid_request", "fields": _fields(exc)}, 400)
        except ClientDisconnect:
            # Gone before its body was in (or cut off at the body deadline): nothing to answer or log.
            return Response(status_code=400)
        except InboxUnavailable:
            return _unavailable()
        return _json({"unread": unread})


def _unavailable() -> Response:
    return _json({"error": "unavailable"}, 503, {"Retry-After": "5"})


def _fields(exc: ValidationError) -> list[str]:
    return sorted({".".join(str(p) for p in e["loc"]) or "(body)" for e in exc.errors()})
