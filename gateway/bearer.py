"""Who an HTTP request of the gateway's API is from: the user its bearer token names, or the 401 to answer.
The token comes from the header only: a token in a URL ends up in proxies' and browsers' histories."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import AuthError, TokenVerifier, bearer_token
from gateway.metrics import GatewayMetrics
from gateway.protocol import close_for


def user_of(request: Request, verifier: TokenVerifier, metrics: GatewayMetrics) -> str | Response:
    try:
        return verifier.verify(bearer_token(request.headers.get("authorization"), None)).user_id
    except AuthError as exc:
        metrics.auth_failures.labels(reason=exc.reason.value).inc()
        reason = close_for(exc.reason).value
        return Response(
            orjson.dumps({"error": reason}),
            401,
            {"WWW-Authenticate": f'Bearer error="{reason}"'},
            media_type="application/json",
        )
