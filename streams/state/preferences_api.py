"""The preference center's internal endpoint on the worker's ops server: a gateway asks the owner of a user's
partition for what the rules in force offer and the user's stored preferences (`PreferencesSnapshot`). Changes
do not come this way: the gateway writes them to the preferences topic, as `herald preferences set` does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.routing import Route

from schemas.preference_center import PreferencesRequest, PreferencesSnapshot
from schemas.preferences import Preferences
from streams.ops.internal import OwnerRoutes
from streams.routing.offered import offered
from streams.routing.rules import RuleBook
from streams.runtime.tables import stored_preferences

PATH = "/internal/preferences"


class PreferencesApi:
    def __init__(
        self,
        routes: OwnerRoutes,
        rules: Callable[[], RuleBook],
        read: Callable[[str], Any],
    ) -> None:
        """`rules` gives the rules in force; `read` a user's stored preferences as the table holds them."""
        self._routes = routes
        self._rules = rules
        self._read = read

    def routes(self) -> list[Route]:
        return [self._routes.route(PATH, PreferencesRequest, self.snapshot)]

    async def aclose(self) -> None:
        await self._routes.aclose()

    def snapshot(self, request: PreferencesRequest) -> bytes:
        stored = self._read(request.user_id)
        preferences = Preferences(user_id=request.user_id) if stored is None else stored_preferences(stored)
        snapshot = PreferencesSnapshot(categories=offered(self._rules().rules), preferences=preferences)
        return snapshot.model_dump_json().encode()
