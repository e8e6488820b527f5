"""The preference center over HTTP with the same bearer token as the socket: `GET /preferences` and
`POST /preferences`, always the token's user's."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import TokenVerifier
from gateway.bearer import user_of
from gateway.metrics import GatewayMetrics
from gateway.preference_center import PreferenceCenter
from kernel.errors import PreferencesRefused, PreferencesUnavailable
from schemas.preference_center import PreferenceChanges, PreferencesView
from schemas.websocket import ErrorCode

# A change for a locked channel is understood but not allowed; one for what no rule offers is a bad request.
REFUSAL_STATUS = {ErrorCode.LOCKED.value: 403, ErrorCode.NOT_OFFERED.value: 400}


def _json(body: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code, headers, media_type="application/json")


def _view(view: PreferencesView) -> Response:
    # Not `to_json`: a choice not made is a null the client reads, not a field left out.
    return Response(view.model_dump_json(), media_type="application/json")


class PreferencesHttp:
    def __init__(self, verifier: TokenVerifier, center: PreferenceCenter, metrics: GatewayMetrics) -> None:
        self._verifier = verifier
        self._center = center
        self._metrics = metrics

    def routes(self) -> list[Route]:
        return [
            Route("/preferences", self._get, methods=["GET"]),
            Route("/preferences", self._post, methods=["POST"]),
        ]

    async def _get(self, request: Request) -> Response:
        user = user_of(request, self._verifier, self._metrics)
        if isinstance(user, Response):
            return user
        try:
            return _view(await self._center.view(user))
        except PreferencesUnavailable:
            return _unavailable()

    async def _post(self, request: Request) -> Response:
        user = user_of(request, self._verifier, self._metrics)
        if isinstance(user, Response):
            return user
        try:
            # The body names no user (`user_id` is an unknown field here): the change is the token's user's.
            changes = PreferenceChanges.model_validate_json(await request.body())
            return _view(await self._center.change(user, changes))
        except ValidationError as exc:
            return _json({"error": "invalid_request", "fields": _fields(exc)}, 400)
        except ClientDisconnect:
            return Response(status_code=400)
        except PreferencesRefused as exc:
            body = {"error": exc.reason, "message": exc.detail, "choices": exc.choices}
            return _json(body, REFUSAL_STATUS.get(exc.reason, 400))
        except PreferencesUnavailable:
            return _unavailable()


def _unavailable() -> Response:
    return _json({"error": "unavailable"}, 503, {"Retry-After": "5"})


def _fields(exc: ValidationError) -> list[str]:
    return sorted({".".join(str(p) for p in e["loc"]) or "(body)" for e in exc.errors()})
