"""The provider fakes of tests/fakes, made unreliable on demand: a seeded fraction of calls time out or answer
429/500, or every call fails while a provider is "down". Each fake keeps the requests it accepted (2xx), which
is the provider's own record of what it delivered."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.fcm import FakeFcm, fcm_error
from tests.fakes.http import RecordedRequest, Reply, ScriptedHttpServer
from tests.fakes.sendgrid import FakeSendGrid, sendgrid_error
from tests.fakes.sns import FakeSns, sns_error
from tests.fakes.twilio import FakeTwilio, twilio_error

FAULT_KINDS = ("timeout", "429", "500")


@dataclass
class FaultPlan:
    """What goes wrong, drawn per call from a seeded generator so a failing run can be replayed."""

    rate: float = 0.0
    hang_seconds: float = 1.5  # longer than the provider timeout the worker is given
    down: bool = False
    seed: int = 8
    injected: Counter[str] = field(default_factory=Counter)
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        with self._lock:
            if self.down:
                self.injected["down"] += 1
                return "down"
            if self.rate and self._rng.random() < self.rate:
                kind = self._rng.choice(FAULT_KINDS)
                self.injected[kind] += 1
                return kind
            return None


class Unreliable:
    """Mixed into a ScriptedHttpServer fake: `faults` decides per call; `accepted` records 2xx answers."""

    faults: FaultPlan
    accepted: list[RecordedRequest]
    _accepted_lock: threading.Lock

    def _init_unreliable(self) -> None:
        self.faults = FaultPlan()
        self.accepted = []
        self._accepted_lock = threading.Lock()

    def error_reply(self, kind: str) -> Reply:
        raise NotImplementedError

    def is_delivery(self, request: RecordedRequest) -> bool:
        raise NotImplementedError

    def answer(self, request: RecordedRequest) -> Reply:
        if self.is_delivery(request):
            fault = self.faults.draw()
            if fault == "timeout":
                # Accepted by the socket, answered too late: the worker has given up and will retry.
                time.sleep(self.faults.hang_seconds)
                return self.error_reply("500")
            if fault is not None:
                return self.error_reply("500" if fault == "down" else fault)
        reply: Reply = super().answer(request)  # type: ignore[misc]
        if self.is_delivery(request) and 200 <= reply.status < 300:
            with self._accepted_lock:
                self.accepted.append(request)
        return reply

    def reset(self) -> None:
        self.faults = FaultPlan()


class UnreliableTwilio(Unreliable, FakeTwilio):
    def __init__(self) -> None:
        FakeTwilio.__init__(self)
        self._init_unreliable()

    def is_delivery(self, request: RecordedRequest) -> bool:
        return request.method == "POST" and request.path.endswith("/Messages.json")

    def error_reply(self, kind: str) -> Reply:
        if kind == "429":
            return twilio_error(429, 20429, "Too Many Requests", {"Retry-After": "0"})
        return twilio_error(500, 20500, "Internal Server Error")


class UnreliableSns(Unreliable, FakeSns):
    def __init__(self) -> None:
        FakeSns.__init__(self)
        self._init_unreliable()

    def is_delivery(self, request: RecordedRequest) -> bool:
        return request.form().get("Action") == "Publish"

    def error_reply(self, kind: str) -> Reply:
        if kind == "429":
            return sns_error(400, "Throttling", "Rate exceeded")
        return sns_error(500, "InternalError")


class UnreliableSendGrid(Unreliable, FakeSendGrid):
    def __init__(self) -> None:
        FakeSendGrid.__init__(self)
        self._init_unreliable()

    def is_delivery(self, request: RecordedRequest) -> bool:
        return request.method == "POST" and request.path == "/v3/mail/send"

    def error_reply(self, kind: str) -> Reply:
        if kind == "429":
            return sendgrid_error(429, "too many requests", {"Retry-After": "0"})
        return sendgrid_error(500, "internal error")


class UnreliableFcm(Unreliable, FakeFcm):
    def __init__(self) -> None:
        FakeFcm.__init__(self, "herald-test")
        self._init_unreliable()

    def is_delivery(self, request: RecordedRequest) -> bool:
        return request.path.endswith("/messages:send")

    def error_reply(self, kind: str) -> Reply:
        return fcm_error("QUOTA_EXCEEDED" if kind == "429" else "INTERNAL")


def all_started(*servers: ScriptedHttpServer) -> list[Any]:
    return [server.start() for server in servers]
