"""A fake Twilio Messages API: `POST /2010-04-01/Accounts/{sid}/Messages.json` (a form) answers 201 JSON."""

from __future__ import annotations

import base64
import itertools
import re

from tests.fakes.http import RecordedRequest, Reply, ScriptedHttpServer

_MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")


def twilio_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    """An error as Twilio words it: `{"code", "message", "more_info", "status"}`."""
    payload = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Reply.json(status, payload, headers)


class FakeTwilio(ScriptedHttpServer):
    def __init__(
        self,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "twilio-token",
        *,
        keep_alive: bool = False,
    ) -> None:
        super().__init__(keep_alive=keep_alive)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._ids = itertools.count(1)

    @property
    def sends(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and _MESSAGES.match(r.path)]

    def answer(self, request: RecordedRequest) -> Reply:
        match = _MESSAGES.match(request.path)
        if request.method != "POST" or match is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if match["sid"] != self.account_sid or request.headers.get("authorization") != f"Basic {expected}":
            return twilio_error(401, 20003, "Authenticate")
        form = request.form()
        sid = f"SM{next(self._ids):032x}"
        return Reply.json(
            201,
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": form.get("To"),
                "from": form.get("From"),
                "body": form.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
        )
