"""The SMTP adapter against a real SMTP server: delivery, and errors classified at the boundary."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from adapters.broker.embedded import free_port
from adapters.email.sink import SmtpSink
from adapters.email.smtp import SmtpEmailSender
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from kernel.settings import SmtpTls
from schemas.notifications import EmailNotification

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def email(**overrides: object) -> EmailNotification:
    fields: dict[str, object] = {
        "notification_id": "ntf_1",
        "event_id": "e1",
        "event_type": "order.shipped",
        "recipient": "alice",
        "occurred_at": NOW,
        "created_at": NOW,
        "to": "alice@example.com",
        "subject": "Hello",
        "text": "Plain body",
        "html": "<p>HTML body</p>",
    }
    fields.update(overrides)
    return EmailNotification.model_validate(fields)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink("127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def sender_for(host: str, port: int, connections: int = 4) -> SmtpEmailSender:
    return SmtpEmailSender(
        host, port, tls=SmtpTls.NONE, sender="Herald <herald@example.com>", timeout=5, connections=connections
    )


async def test_delivers_multipart_with_notification_id(sink: SmtpSink) -> None:
    message_id = await sender_for(*sink.address).send(email())
    [received] = sink.messages
    assert received["To"] == "alice@example.com" and received["Subject"] == "Hello"
    assert received["X-Herald-Notification-Id"] == "ntf_1"
    assert message_id == received["Message-ID"] and "ntf_1" in message_id
    assert received.get_body(preferencelist=("plain",)).get_content().strip() == "Plain body"
    assert received.get_body(preferencelist=("html",)).get_content().strip() == "<p>HTML body</p>"


@pytest.mark.parametrize(
    "subject",
    [
        "Your order #123 shipped",
        "Ça a été expédié ✓",
        "a literal =?utf-8?q?encoded_word?= is not decoded",
        "x" * 200,
        "word " * 40 + "end",
    ],
)
async def test_headers_and_bodies_read_back_as_written(sink: SmtpSink, subject: str) -> None:
    # Built on compat32 for speed (adapters/email/smtp.py): what the EmailMessage API checked still holds.
    text = "From the warehouse:\n.\n" + "é" * 3000 + "\nend"
    sender = SmtpEmailSender(
        "127.0.0.1", sink.address[1], tls=SmtpTls.NONE, sender="Équipe Herald <h@example.com>"
    )
    await sender.send(email(subject=subject, text=text, html="<p>Ünïcode</p>"))
    [received] = sink.messages
    assert received["Subject"] == subject
    assert received["From"].addresses[0].display_name == "Équipe Herald"
    assert received["From"].addresses[0].addr_spec == "h@example.com"
    # No ">From " (mbox mangling), the lone dot kept (dot-stuffing), a 6,000-byte line folded and rejoined;
    # line breaks arrive as SMTP's CRLF.
    assert received.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n") == text
    assert received.get_body(preferencelist=("html",)).get_content() == "<p>Ünïcode</p>"


async def test_a_text_only_message_is_a_single_part(sink: SmtpSink) -> None:
    await sender_for(*sink.address).send(email(html=None, text="Just text"))
    [received] = sink.messages
    assert not received.is_multipart() and received.get_content_type() == "text/plain"
    assert received.get_content().strip() == "Just text"


async def test_an_internationalized_address_goes_over_smtputf8(sink: SmtpSink) -> None:
    await sender_for(*sink.address).send(email(to="jörg@bücher.example", subject="Grüße"))
    [received] = sink.messages
    assert received["To"] == "jörg@bücher.example" and received["Subject"] == "Grüße"
    assert received.get_body(preferencelist=("plain",)).get_content().strip() == "Plain body"


async def test_an_internationalized_address_to_a_server_without_smtputf8_is_permanent() -> None:
    server = SmtpSink("127.0.0.1", 0, smtputf8=False)
    server.start()
    try:
        with pytest.raises(PermanentDeliveryError) as info:
            await sender_for(*server.address).send(email(to="jörg@bücher.example"))
    finally:
        server.stop()
    assert info.value.reason == "provider_refused" and "jörg" not in info.value.detail
    assert not server.messages


@pytest.mark.parametrize("subject", ["two\nlines", "carriage\rreturn"])
async def test_a_line_break_in_a_header_is_refused_before_sending(sink: SmtpSink, subject: str) -> None:
    with pytest.raises(ValueError, match="Subject header holds a line break"):
        await sender_for(*sink.address).send(email(subject=subject))
    assert sink.calls == 0


async def test_5xx_is_permanent_with_the_code(sink: SmtpSink) -> None:
    sink.refusal = "550 5.1.1 No such user"
    with pytest.raises(PermanentDeliveryError) as info:
        await sender_for(*sink.address).send(email())
    assert info.value.provider_code == "550"
    assert not sink.messages


async def test_4xx_is_retriable(sink: SmtpSink) -> None:
    sink.refusal = "451 4.3.0 Try again later"
    with pytest.raises(RetriableDeliveryError) as info:
        await sender_for(*sink.address).send(email())
    assert info.value.provider_code == "451"


async def test_no_server_is_retriable() -> None:
    with pytest.raises(RetriableDeliveryError, match="connection"):
        await sender_for("127.0.0.1", free_port()).send(email())


async def test_connections_are_kept_open_and_reused(sink: SmtpSink) -> None:
    sender = sender_for(*sink.address, connections=3)
    for n in range(5):
        await sender.send(email(notification_id=f"ntf_seq{n}"))
    assert len(sink.peers) == 1
    await asyncio.gather(*(sender.send(email(notification_id=f"ntf_par{n}")) for n in range(12)))
    assert len(sink.messages) == 17
    assert len(sink.peers) <= 3


async def test_a_connection_carries_at_most_its_messages_then_a_fresh_one_is_opened(sink: SmtpSink) -> None:
    sender = SmtpEmailSender(
        *sink.address, tls=SmtpTls.NONE, sender="h@example.com", connections=1, messages_per_connection=2
    )
    for n in range(5):
        await sender.send(email(notification_id=f"ntf_{n}"))
    await sender.aclose()
    assert len(sink.messages) == 5 and len(sink.peers) == 3  # 2 + 2 + 1


async def test_the_ehlo_name_is_the_one_configured_or_this_hosts_looked_up_once(
    sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = SmtpEmailSender(
        *sink.address, tls=SmtpTls.NONE, sender="h@example.com", local_hostname="mx.example"
    )
    await named.send(email())
    assert sink.greetings == {"mx.example"}

    lookups: list[int] = []

    def getfqdn(name: str = "") -> str:
        lookups.append(1)
        return "host.example"

    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    looked_up = SmtpEmailSender(
        *sink.address, tls=SmtpTls.NONE, sender="h@example.com", connections=1, messages_per_connection=1
    )
    for n in range(3):  # a connection each
        await looked_up.send(email(notification_id=f"ntf_{n}"))
    assert sink.greetings == {"mx.example", "host.example"} and len(lookups) == 1


async def test_a_connection_the_server_closed_is_replaced_without_failing_the_message() -> None:
    host, port = "127.0.0.1", free_port()
    first = SmtpSink(host, port)
    first.start()
    sender = sender_for(host, port)
    await sender.send(email(notification_id="ntf_before"))
    first.stop()  # drops the kept-open connection
    second = SmtpSink(host, port)
    second.start()
    try:
        await sender.send(email(notification_id="ntf_after"))
        assert [m["X-Herald-Notification-Id"] for m in second.messages] == ["ntf_after"]
    finally:
        second.stop()


async def test_a_refusal_does_not_spoil_the_next_message(sink: SmtpSink) -> None:
    sender = sender_for(*sink.address, connections=1)
    sink.refuse_next(1, "550 5.1.1 No such user")
    with pytest.raises(PermanentDeliveryError):
        await sender.send(email(notification_id="ntf_refused"))
    await sender.send(email(notification_id="ntf_fine"))
    assert [m["X-Herald-Notification-Id"] for m in sink.messages] == ["ntf_fine"]


async def test_aclose_quits_the_kept_open_connections(sink: SmtpSink) -> None:
    sender = sender_for(*sink.address, connections=2)
    await asyncio.gather(*(sender.send(email(notification_id=f"ntf_{n}")) for n in range(2)))
    kept = len(sink.peers)
    await sender.aclose()
    assert sink.quits == kept >= 1


async def test_a_message_in_flight_at_aclose_still_goes_and_its_connection_is_quit(sink: SmtpSink) -> None:
    sender = sender_for(*sink.address, connections=1)
    sending = asyncio.ensure_future(sender.send(email(notification_id="ntf_late")))
    await asyncio.sleep(0)  # the send has taken its connection slot
    await sender.aclose()
    await sending
    assert [m["X-Herald-Notification-Id"] for m in sink.messages] == ["ntf_late"]
    assert sink.quits == 1


async def test_a_refusal_quoting_the_address_keeps_only_its_pseudonym(sink: SmtpSink) -> None:
    from kernel.privacy import pseudonym

    sink.refusal = "550 5.1.1 <alice@example.com>: Recipient address rejected: User unknown"
    with pytest.raises(PermanentDeliveryError) as info:
        await sender_for(*sink.address).send(email())
    assert "alice@example.com" not in info.value.detail
    assert pseudonym("alice@example.com") in info.value.detail and "User unknown" in info.value.detail
