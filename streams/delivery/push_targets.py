"""Which provider each of a user's devices goes to: the first in order that can address its kind of token and
is not cooling down; a user's iOS APNs tokens stand by while an iOS FCM token is being tried."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from schemas.users import Device, Platform, TokenKind


@dataclass
class PushPlan:
    batches: dict[str, list[Device]] = field(default_factory=dict)  # provider → devices, in provider order
    standby: list[Device] = field(default_factory=list)  # iOS APNs tokens, sent only if FCM fails for iOS
    standby_provider: str | None = None
    standing_in_for: str | None = None  # the provider whose iOS failure brings in the standby
    unsupported: list[Device] = field(default_factory=list)  # no configured provider takes this kind
    cooling: list[Device] = field(default_factory=list)  # every provider that could is cooling down


def plan_push(
    devices: Sequence[Device],
    providers: Sequence[tuple[str, frozenset[TokenKind]]],
    usable: Callable[[str], bool],
) -> PushPlan:
    """`usable(name)` is asked at most once per provider (a half-open circuit allows one trial)."""
    verdicts: dict[str, bool] = {}

    def open_(name: str) -> bool:
        if name not in verdicts:
            verdicts[name] = usable(name)
        return verdicts[name]

    order = [name for name, _ in providers]
    plan = PushPlan()
    routes: list[tuple[Device, str]] = []
    for device in devices:
        capable = [name for name, kinds in providers if device.kind in kinds]
        if not capable:
            plan.unsupported.append(device)
            continue
        route = next((name for name in capable if open_(name)), None)
        if route is None:
            plan.cooling.append(device)
        else:
            routes.append((device, route))
    ios_other = [r for d, r in routes if d.platform is Platform.IOS and d.kind is not TokenKind.APNS]
    for device, route in routes:
        ahead = [r for r in ios_other if order.index(r) < order.index(route)]
        if device.platform is Platform.IOS and device.kind is TokenKind.APNS and ahead:
            plan.standby.append(device)
            plan.standby_provider, plan.standing_in_for = route, ahead[0]
        else:
            plan.batches.setdefault(route, []).append(device)
    plan.batches = {name: plan.batches[name] for name in order if name in plan.batches}
    return plan
