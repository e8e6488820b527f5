"""The workers' internal endpoint for gateways: requests about one user, answered by the worker that owns the
user's partition. Any worker takes them; one that does not own the user forwards the request, once, to the one
that does, as Faust's table routing does.

Guarded by HERALD_INTERNAL_SECRET (a bearer token shared by gateways and workers); without it the endpoint
is not served. Bodies carry the user id, never the URL, so no proxy or log line holds it."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import aiohttp
import orjson
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from schemas.base import WireModel
from streams.state.directory import home_partition

log = logging.getLogger("herald.internal")

M = TypeVar("M", bound=WireModel)

FORWARDED: Final = "x-herald-forwarded"


class Ownership:
    """Where a user's state of one table is now: on this worker (and readable), on another (its URL), or
    unknown. `topic` is the table's input topic, whose partitions this worker's assignment names."""

    def __init__(self, app: Any, topic: str, changelog_topic: str, partitions: int) -> None:
        self._app = app
        self._topic = topic
        self._changelog = changelog_topic
        self._partitions = partitions

    def partition(self, user_id: str) -> int:
        return home_partition(user_id, self._partitions)

    def ready(self) -> bool:
        return not (self._app.rebalancing or self._app.in_recovery)

    def mine(self, partition: int) -> bool:
        actives = self._app.assignor.assigned_actives()
        return any(tp.topic == self._topic and tp.partition == partition for tp in actives)

    def owner_url(self, partition: int) -> str | None:
        for url, topics in self._app.assignor.table_metadata(self._changelog).items():
            if partition in topics.get(self._changelog, ()):
                return str(url)
        return None


class OwnerRoutes:
    """Builds routes whose requests name a user (`user_id` in the body): checked against the secret, parsed,
    and answered here by the owner or forwarded to it; 503 with Retry-After while no worker can answer."""

    def __init__(self, ownership: Ownership, *, secret: str, own_url: str, timeout_seconds: float) -> None:
        self._ownership = ownership
        self._authorization = f"Bearer {secret}".encode()
        self._own_url = own_url.rstrip("/")
        self._timeout = timeout_seconds
        self._http: aiohttp.ClientSession | None = None

    def route(self, path: str, model: type[M], answer: Callable[[M], bytes]) -> Route:
        return Route(path, self._endpoint(model, answer), methods=["POST"])

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _endpoint(
        self, model: type[M], answer: Callable[[M], bytes]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, self._authorization):
                return json_response({"error": "unauthorized"}, 401)
            try:
                body = await request.body()
                parsed = model.model_validate_json(body)
            except ValidationError:
                return json_response({"error": "invalid_request"}, 400)
            except ClientDisconnect:
                return Response(status_code=400)
            user_id: str = parsed.user_id  # type: ignore[attr-defined]
            partition = self._ownership.partition(user_id)
            if self._ownership.ready() and self._ownership.mine(partition):
                return Response(answer(parsed), media_type="application/json")
            owner = self._ownership.owner_url(partition) if self._ownership.ready() else None
            if request.headers.get(FORWARDED) or owner is None or owner.rstrip("/") == self._own_url:
                return json_response({"error": "not_ready"}, 503, {"Retry-After": "1"})
            return await self._forward(owner, request.url.path, body)

        return endpoint

    async def _forward(self, owner: str, path: str, body: bytes) -> Response:
        if self._http is None:
            # aiohttp: a tenth of httpx's CPU per request (gateway/owner.py).
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout), connector=aiohttp.TCPConnector(limit=100)
            )
        headers = {
            "authorization": self._authorization.decode(),
            "content-type": "application/json",
            FORWARDED: "1",
        }
        try:
            async with self._http.post(owner.rstrip("/") + path, data=body, headers=headers) as answer:
                status, content = answer.status, await answer.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("cannot reach the owner of %s: %s", path, type(exc).__name__)
            return json_response({"error": "not_ready"}, 503, {"Retry-After": "1"})
        return Response(content, status, media_type="application/json")


def json_response(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")
