"""A fake SendGrid v3 Mail Send endpoint: `POST /v3/mail/send` answers 202 with an `X-Message-Id`."""

from __future__ import annotations

import itertools

from tests.fakes.http import RecordedRequest, Reply, ScriptedHttpServer


def sendgrid_error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    """An error as SendGrid words it: `{"errors": [{"message", "field", "help"}]}`."""
    return Reply.json(status, {"errors": [{"message": message, "field": None, "help": None}]}, headers)


class FakeSendGrid(ScriptedHttpServer):
    def __init__(self, api_key: str = "SG.test-key", host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.api_key = api_key
        self._ids = itertools.count(1)

    @property
    def sends(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v3/mail/send"]

    def answer(self, request: RecordedRequest) -> Reply:
        if request.method != "POST" or request.path != "/v3/mail/send":
            return sendgrid_error(404, "not found")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return sendgrid_error(401, "The provided authorization grant is invalid, expired, or revoked")
        return Reply(202, headers={"X-Message-Id": f"sg-msg-{next(self._ids)}"})
