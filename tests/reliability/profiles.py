"""Profiles for the gateway cases: `Deployment.users`, with a phone number that is valid whatever the tag
(`+336<tag % 100>…` is not a valid French mobile for 8 of the 100 values, e.g. 697…, and is then refused)."""

from __future__ import annotations

from typing import Any

from tests.reliability.harness import Deployment


def users(deployment: Deployment, count: int) -> list[dict[str, Any]]:
    made = deployment.users(count)
    for n, profile in enumerate(made):
        profile["phone"] = f"+33612{n:06d}"
    return made
