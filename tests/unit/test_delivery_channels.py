"""Wiring the channels: each gets its step configuration and one `Send` that turns its failover chain's
answer into data, push tokens reported gone included, per notification even when sends overlap."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from adapters.push import PushResult, PushToken, TokenOutcome
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from kernel.settings import Settings
from kernel.topics import TopicNames
from schemas.channels import Channel
from schemas.notifications import EmailNotification, PushNotification
from schemas.users import Device, Platform, TokenKind
from streams.delivery.channels import wire_channels
from streams.delivery.failover import Sent
from streams.delivery.hygiene import push_hygiene, sms_hygiene
from streams.delivery.providers import Providers

SETTINGS = Settings(_env_file=None, retry_tiers=2)  # type: ignore[call-arg]
NAMES = TopicNames.from_settings(SETTINGS)
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Email:
    def __init__(self, name: str, error: Exception | None = None) -> None:
        self.name = name
        self.error = error

    async def send(self, message: EmailNotification) -> str | None:
        if self.error is not None:
            raise self.error
        return f"{self.name}-id"

    async def aclose(self) -> None:
        pass


class Fcm:
    """Refuses the tokens named `gone-*` as unregistered, after a pause (so two sends overlap)."""

    name = "fcm"
    kinds = frozenset({TokenKind.FCM_TOKEN})

    async def send(self, message: PushNotification, tokens: Sequence[PushToken]) -> PushResult:
        await asyncio.sleep(0.01)
        gone = PermanentDeliveryError("unregistered", reason="unregistered")
        return PushResult(
            tuple(
                TokenOutcome(t, error=gone, token_invalid=True)
                if t.value.startswith("gone-")
                else TokenOutcome(t, message_id=f"m-{t.value}")
                for t in tokens
            )
        )

    async def aclose(self) -> None:
        pass


def push(recipient: str, *tokens: str) -> PushNotification:
    return PushNotification(
        notification_id=f"n-{recipient}",
        event_id="e",
        event_type="security.login",
        recipient=recipient,
        occurred_at=AT,
        created_at=AT,
        devices=[Device(token=t, platform=Platform.ANDROID) for t in tokens],
        title="T",
        body="B",
    )


def email() -> EmailNotification:
    return EmailNotification(
        notification_id="n",
        event_id="e",
        event_type="order.shipped",
        recipient="ann",
        occurred_at=AT,
        created_at=AT,
        to="ann@example.com",
        subject="S",
        text="T",
    )


def wired(providers: Providers) -> dict[Channel, Any]:
    return {w.spec.channel: w for w in wire_channels(SETTINGS, NAMES, providers)}


def test_each_channel_is_wired_with_its_model_tiers_and_hygiene() -> None:
    channels = wired(Providers())
    assert list(channels) == [Channel.EMAIL, Channel.SMS, Channel.PUSH]
    assert channels[Channel.SMS].spec.retry_topics == (
        "herald.deliver.sms.retry.1",
        "herald.deliver.sms.retry.2",
    )
    assert channels[Channel.PUSH].spec.model is PushNotification
    assert channels[Channel.SMS].spec.hygiene is sms_hygiene
    assert channels[Channel.PUSH].spec.hygiene is push_hygiene
    assert channels[Channel.EMAIL].spec.hygiene is None
    assert channels[Channel.EMAIL].spec.policy.tiers == 2


async def test_the_answer_holds_every_attempt_and_the_provider_that_accepted() -> None:
    down = RetriableDeliveryError("down", reason="timeout")
    send = wired(Providers(email=[Email("sendgrid", down), Email("smtp")]))[Channel.EMAIL].send
    answer = await send(email())
    assert [(a.provider, a.error) for a in answer.attempts] == [("sendgrid", down), ("smtp", None)]
    assert answer.outcome == Sent("smtp", "smtp-id")


async def test_a_refusal_is_the_answers_outcome_not_an_exception() -> None:
    refused = PermanentDeliveryError("550", reason="provider_refused")
    send = wired(Providers(email=[Email("smtp", refused)]))[Channel.EMAIL].send
    answer = await send(email())
    assert answer.outcome is refused and len(answer.attempts) == 1
    none = await wired(Providers())[Channel.EMAIL].send(email())
    assert isinstance(none.outcome, PermanentDeliveryError) and none.outcome.reason == "no_provider"


async def test_push_tokens_reported_gone_are_in_each_notifications_own_answer() -> None:
    send = wired(Providers(push=[Fcm()]))[Channel.PUSH].send
    ann, bob = await asyncio.gather(
        send(push("ann", "a-phone", "gone-a")), send(push("bob", "gone-b1", "gone-b2"))
    )
    assert isinstance(ann.outcome, Sent) and ann.gone_tokens == ("gone-a",)
    assert isinstance(bob.outcome, PermanentDeliveryError) and bob.gone_tokens == ("gone-b1", "gone-b2")
    assert (await send(push("cat", "c-phone"))).gone_tokens == ()
