"""AWS SNS for tests: moto's server on loopback, behind a recording proxy that can be scripted to fail."""

from __future__ import annotations

import http.client
from typing import Self

from moto.server import ThreadedMotoServer

from adapters.broker.embedded import free_port
from tests.fakes.http import RecordedRequest, Reply, ScriptedHttpServer

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def sns_error(
    status: int, code: str, message: str = "refused", headers: dict[str, str] | None = None
) -> Reply:
    """An error as SNS's query protocol words it (XML)."""
    kind = "Receiver" if status >= 500 else "Sender"
    body = (
        '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
        f"<Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    ).encode()
    return Reply(status, body, {"Content-Type": "text/xml", **(headers or {})})


class FakeSns(ScriptedHttpServer):
    """Forwards every unscripted request to a moto server it runs, so SNS itself answers."""

    def __init__(self) -> None:
        super().__init__()
        self._moto_port = free_port()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self._moto_port, verbose=False)

    @property
    def publishes(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.form().get("Action") == "Publish"]

    def answer(self, request: RecordedRequest) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self._moto_port, timeout=10)
        try:
            headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
            connection.request(request.method, request.target, body=request.body, headers=headers)
            response = connection.getresponse()
            body = response.read()
            forwarded = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            return Reply(response.status, body, forwarded)
        finally:
            connection.close()

    def start(self) -> Self:
        self._moto.start()
        self._warm()
        return super().start()

    def _warm(self) -> None:
        """One SNS request straight to moto: its first one loads the SNS backend (0.33 s here idle, past the
        0.5 s timeout tests give the sender on a loaded CI machine), which no test means to measure."""
        connection = http.client.HTTPConnection("127.0.0.1", self._moto_port, timeout=30)
        try:
            scope = "testing/20260101/eu-west-1/sns/aws4_request"
            credential = f"Credential={scope}, SignedHeaders=host, Signature=x"
            connection.request(
                "POST",
                "/",
                body="Action=ListTopics&Version=2010-03-31",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Authorization": f"AWS4-HMAC-SHA256 {credential}",
                },
            )
            connection.getresponse().read()
        finally:
            connection.close()

    def stop(self) -> None:
        super().stop()
        self._moto.stop()
