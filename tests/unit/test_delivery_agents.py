"""The delivery agents' batch work, without a broker: a recording producer and tables behind the real outbox
and settler, a scripted channel behind `Send`. What is checked is what the steps cannot show: order per
recipient, the dedup entry durable before the status that says delivered, one delivery per recipient at a
time across agents, and a batch run again applying what was decided instead of sending again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from kernel.settings import Settings
from kernel.topics import TopicNames
from schemas.channels import Channel
from schemas.deadletter import DeadLetter
from schemas.notifications import EmailNotification, NotificationBase, SmsNotification
from schemas.status import DeliveryStatus, Outcome
from schemas.users import UserProfile
from streams.delivery.agents import ChannelAgents
from streams.delivery.answers import Answer
from streams.delivery.channels import WiredChannel
from streams.delivery.failover import Attempt, Sent
from streams.delivery.hygiene import sms_hygiene
from streams.delivery.retry_policy import RetryPolicy
from streams.delivery.steps import ChannelSpec
from streams.ops.metrics import WorkerMetrics
from streams.runtime import outbox as outbox_module
from streams.runtime.outbox import Outbox, Settler
from streams.runtime.tables import StateTable, Tables
from streams.runtime.worker import Worker
from tests.fakes.publisher import publish_each

NAMES = TopicNames.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
OCCURRED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
Log = list[tuple[Any, ...]]
CHANGELOGS = frozenset(NAMES.changelogs.values())


class Producer:
    """Takes records (logged as produced), except that the broker refuses the first `failures` of those that
    are not table writes. A table's changelog write is acknowledged 10 ms later (logged then)."""

    def __init__(self, log: Log, failures: int = 0) -> None:
        self.log = log
        self.failures = failures
        self.refuse_at_once: set[str] = set()  # topics whose next record is refused as it is handed over

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None, *_: Any
    ) -> asyncio.Future[None]:
        if topic in self.refuse_at_once:
            self.refuse_at_once.discard(topic)
            raise RuntimeError("record too large")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if topic in CHANGELOGS:
            # The outbox hands over the JSON it measured against the record budget; a delete as no value.
            entry = ("changelog acked", json.loads(key or b""), None if value is None else json.loads(value))

            def ack() -> None:
                self.log.append(entry)
                done.set_result(None)

            asyncio.get_running_loop().call_later(0.01, ack)
        elif self.failures:
            self.failures -= 1
            done.set_exception(RuntimeError("broker refused the record"))
        else:
            self.log.append(("produce", topic, value))
            done.set_result(None)
        return done


class Table:
    """A Faust table's surface: `data`, `get`."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def __len__(self) -> int:
        return len(self.data)


class Event:
    """A Faust event's surface: its message (weak-referenceable, as Faust's current event must be)."""

    def __init__(self, value: bytes, key: bytes, offset: int = 0) -> None:
        self.message = SimpleNamespace(
            topic="herald.deliver.email", partition=2, offset=offset, key=key, value=value
        )


class Channel_:
    """The providers behind `Send`: answers from a script per notification id (delivered by default),
    optionally after a pause; records when each call started and ended."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer | Exception] = {}
        self.pauses: dict[str, float] = {}
        self.calls: list[tuple[str, str]] = []

    async def send(self, notification: NotificationBase) -> Answer:
        nid = notification.notification_id
        self.calls.append(("start", nid))
        await asyncio.sleep(self.pauses.get(nid, 0))
        self.calls.append(("end", nid))
        answer = self.answers.get(nid, Answer((Attempt("smtp", 0.1, "m"),), Sent("smtp", "m")))
        if isinstance(answer, Exception):
            raise answer
        return answer


def email(nid: str, recipient: str, **changes: Any) -> bytes:
    return EmailNotification(
        notification_id=nid,
        event_id=f"evt-{nid}",
        event_type="order.shipped",
        recipient=recipient,
        occurred_at=OCCURRED,
        created_at=OCCURRED,
        to=f"{recipient}@example.com",
        subject="S",
        text="T",
        **changes,
    ).to_json()


def sms(nid: str, recipient: str, to: str) -> bytes:
    return SmsNotification(
        notification_id=nid,
        event_id=f"evt-{nid}",
        event_type="security.login",
        recipient=recipient,
        occurred_at=OCCURRED,
        created_at=OCCURRED,
        to=to,
        text="T",
    ).to_json()


class Rig:
    def __init__(
        self,
        *,
        channel: Channel = Channel.EMAIL,
        failures: int = 0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_record_bytes: int = 1_000_000,
    ) -> None:
        self.log: Log = []
        self.registry = CollectorRegistry()
        metrics = WorkerMetrics(self.registry, "test")
        self.tables = Tables(
            StateTable(Table(), lambda v: UserProfile.model_validate(v, strict=False)),
            *(StateTable(Table()) for _ in range(5)),
        )
        self.producer = Producer(self.log, failures)
        app = cast(Any, SimpleNamespace(producer=self.producer))
        settler = Settler(
            lambda: Outbox(publish_each(app.producer), NAMES, self.tables, metrics, clock, max_record_bytes),
            metrics,
        )
        worker = SimpleNamespace(
            settings=SimpleNamespace(delivery_concurrency=8),
            tables=self.tables,
            metrics=metrics,
            clock=clock,
            settler=settler,
        )
        model: type[NotificationBase] = EmailNotification if channel is Channel.EMAIL else SmsNotification
        spec = ChannelSpec(
            channel=channel,
            model=model,
            policy=RetryPolicy(base_delay_seconds=1.0, jitter=0.0, max_attempts=3, tiers=2),
            retry_topics=NAMES.retries[channel],
            users_topic=NAMES.users,
            dedup_retention_seconds=3600.0,
            hygiene=sms_hygiene if channel is Channel.SMS else None,  # type: ignore[arg-type]
        )
        self.channel = Channel_()
        self.agents = ChannelAgents(cast(Worker, worker), WiredChannel(spec, self.channel.send))

    def produced(self, topic: str) -> list[bytes]:
        return [entry[2] for entry in self.log if entry[0] == "produce" and entry[1] == topic]

    def statuses(self) -> list[DeliveryStatus]:
        return [DeliveryStatus.model_validate_json(v) for v in self.produced(NAMES.status)]

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def delivered_ids(self, recipient: str) -> set[str]:
        """The notification ids the delivered-ids table holds for `recipient` (one entry each)."""
        keys = self.tables.delivered.faust.data
        return {key.split("\x1f", 1)[1] for key in keys if key.startswith(recipient + "\x1f")}


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "SETTLE_FIRST_DELAY_SECONDS", 0.0)


async def test_the_delivered_status_follows_the_acknowledged_dedup_entry() -> None:
    rig = Rig()
    await rig.agents.settle("deliver.email", [Event(email("n1", "ann"), b"ann")])

    assert rig.delivered_ids("ann") == {"n1"}
    kinds = [(entry[0], entry[1]) for entry in rig.log]
    assert kinds == [("changelog acked", "ann\x1fn1"), ("produce", NAMES.status)]
    [status] = rig.statuses()
    assert (status.notification_id, status.outcome, status.provider) == ("n1", Outcome.DELIVERED, "smtp")


async def test_one_recipients_notifications_go_in_order_and_others_alongside() -> None:
    rig = Rig()
    rig.channel.pauses["a1"] = 0.05
    batch = [
        Event(email("a1", "ann"), b"ann"),
        Event(email("a2", "ann"), b"ann"),
        Event(email("b1", "bob"), b"bob"),
    ]
    await rig.agents.settle("deliver.email", batch)

    calls = rig.channel.calls
    assert calls.index(("end", "a1")) < calls.index(("start", "a2"))  # ann's in order
    assert calls.index(("start", "b1")) < calls.index(("end", "a1"))  # bob did not wait for ann
    assert [s.notification_id for s in rig.statuses() if s.recipient == "ann"] == ["a1", "a2"]


async def test_a_duplicate_in_the_same_batch_reaches_the_person_once() -> None:
    rig = Rig()
    twice = email("c1", "cat")
    await rig.agents.settle("deliver.email", [Event(twice, b"cat", 1), Event(twice, b"cat", 2)])

    assert rig.channel.calls == [("start", "c1"), ("end", "c1")]
    assert [(s.outcome, s.reason) for s in rig.statuses()] == [
        (Outcome.DELIVERED, None),
        (Outcome.SKIPPED, "duplicate"),
    ]
    assert rig.sample("herald_notifications_skipped_total", channel="email", reason="duplicate") == 1


async def test_a_replay_and_its_parked_retry_never_both_pass_the_dedup_check() -> None:
    rig = Rig()
    rig.channel.pauses["d1"] = 0.05
    fresh = Event(email("d1", "dan"), b"dan")
    parked = Event(email("d1", "dan", attempt=2), b"dan")
    await asyncio.gather(
        rig.agents.settle("deliver.email", [fresh]),
        rig.agents.settle("deliver.email.retry", [parked], wait_until_due=True),
    )
    assert rig.channel.calls == [("start", "d1"), ("end", "d1")]
    assert sorted(s.outcome for s in rig.statuses()) == [Outcome.DELIVERED, Outcome.SKIPPED]


async def test_a_retry_waits_until_it_is_due() -> None:
    rig = Rig()
    due = datetime.now(UTC) + timedelta(seconds=0.2)
    await rig.agents.settle(
        "deliver.email.retry",
        [Event(email("r1", "rae", attempt=2, not_before=due), b"rae")],
        wait_until_due=True,
    )
    [status] = rig.statuses()
    assert status.at >= due and status.attempt == 2


async def test_a_batch_run_again_applies_what_was_decided_without_sending_again() -> None:
    rig = Rig(failures=1)  # the broker refuses the first record: the batch's delivered status
    await rig.agents.settle("deliver.email", [Event(email("e1", "eve"), b"eve")])

    assert rig.channel.calls == [("start", "e1"), ("end", "e1")]  # the provider was asked once
    # Not "skipped as a duplicate of itself": the status decided the first time, after the dedup entry
    # went to the changelog again.
    assert [s.outcome for s in rig.statuses()] == [Outcome.DELIVERED]
    acked = [entry for entry in rig.log if entry[0] == "changelog acked"]
    # The same entry twice, the same value: when e1 was delivered.
    assert [entry[1] for entry in acked] == ["eve\x1fe1", "eve\x1fe1"] and acked[0][2] == acked[1][2]
    assert rig.sample("herald_batch_failures_total", agent="deliver.email") == 1
    assert (
        rig.sample("herald_provider_attempts_total", channel="email", provider="smtp", outcome="delivered")
        == 1
    )


async def test_a_batch_run_again_keeps_what_another_agent_wrote_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_module, "SETTLE_FIRST_DELAY_SECONDS", 0.1)
    rig = Rig(failures=1)  # refused: the fresh batch's status (produced at ~10 ms, after its changelog)
    rig.channel.pauses["e2"] = 0.03  # the retry agent delivers e2 while the fresh batch waits to run again
    await asyncio.gather(
        rig.agents.settle("deliver.email", [Event(email("e1", "eve"), b"eve")]),
        rig.agents.settle("deliver.email.retry", [Event(email("e2", "eve", attempt=2), b"eve")]),
    )
    assert rig.delivered_ids("eve") == {"e1", "e2"}
    # Each delivery wrote its own entry, and the batch run again wrote e1's again, not e2's over.
    acked = [entry[1] for entry in rig.log if entry[0] == "changelog acked"]
    assert set(acked) == {"eve\x1fe1", "eve\x1fe2"} and acked[-1] == "eve\x1fe1"
    assert sorted(s.notification_id for s in rig.statuses()) == ["e1", "e2"]


async def test_a_batch_runs_again_only_once_every_recipients_delivery_has_ended() -> None:
    rig = Rig()
    rig.producer.refuse_at_once.add(NAMES.retries[Channel.EMAIL][0])  # ann's retry record, at once
    rig.channel.answers["a1"] = Answer((), RetriableDeliveryError("busy"))
    rig.channel.pauses["b1"] = 0.05  # bob's delivery is still in flight when ann's fails
    await rig.agents.settle(
        "deliver.email", [Event(email("a1", "ann"), b"ann"), Event(email("b1", "bob"), b"bob")]
    )

    assert [nid for step, nid in rig.channel.calls if step == "start"] == ["a1", "b1"]
    assert [(s.notification_id, s.outcome) for s in rig.statuses()] == [("b1", Outcome.DELIVERED)]
    assert len(rig.produced(NAMES.retries[Channel.EMAIL][0])) == 1


async def test_bad_input_and_unforeseen_errors_go_to_the_dlq_and_the_batch_goes_on() -> None:
    rig = Rig()
    rig.channel.answers["boom"] = KeyError("a bug in an adapter")
    batch = [
        Event(b"{not json", b"ann", 1),
        Event(email("boom", "bob"), b"bob", 2),
        Event(email("fine", "cat"), b"cat", 3),
    ]
    await rig.agents.settle("deliver.email", batch)

    letters = [DeadLetter.model_validate_json(v) for v in rig.produced(NAMES.dlq)]
    assert sorted((x.offset, x.reason, x.stage) for x in letters) == [
        (1, "invalid_notification", "email"),
        (2, "internal_error", "email"),
    ]
    assert [(s.notification_id, s.outcome) for s in rig.statuses()] == [("fine", Outcome.DELIVERED)]


async def test_retries_permanent_refusals_and_hygiene_are_counted() -> None:
    rig = Rig(channel=Channel.SMS)
    rig.tables.users.faust.data["uma"] = {"user_id": "uma", "phone": "+33612345678"}
    busy = RetriableDeliveryError("busy", reason="throttled")
    stop = PermanentDeliveryError("21610", reason="unsubscribed", provider_code="21610")
    rig.channel.answers["s1"] = Answer((Attempt("twilio", 0.2, error=busy),), busy)
    rig.channel.answers["s2"] = Answer((Attempt("twilio", 0.2, error=stop),), stop)
    batch = [Event(sms("s1", "ted", "+33600000001"), b"ted"), Event(sms("s2", "uma", "+33612345678"), b"uma")]
    await rig.agents.settle("deliver.sms", batch)

    assert len(rig.produced(NAMES.retries[Channel.SMS][0])) == 1
    assert rig.produced(NAMES.users) == [b'{"user_id":"uma","phone":null}']
    assert len(rig.produced(NAMES.dlq)) == 1
    assert rig.sample("herald_retries_total", channel="sms", reason="throttled") == 1
    assert rig.sample("herald_addresses_removed_total", channel="sms") == 1
    assert rig.sample("herald_dead_letters_total", stage="sms", reason="unsubscribed") == 1
    assert (
        rig.sample("herald_provider_attempts_total", channel="sms", provider="twilio", outcome="failed") == 2
    )
    assert rig.sample("herald_end_to_end_seconds_count", channel="sms") is None  # nothing delivered


async def test_a_retry_record_over_the_budget_is_a_dead_letter_with_no_status() -> None:
    notification = email("big", "eve", html="x" * (512 * 1024 - 294))  # 20 bytes under the budget
    rig = Rig(max_record_bytes=512 * 1024)
    rig.channel.answers["big"] = Answer((), RetriableDeliveryError("busy"))
    await rig.agents.settle("deliver.email", [Event(notification, b"eve")])
    # The retry record (the notification with its next attempt's time) is over the budget: the message is
    # dead-lettered rather than its batch run again forever, and no status says it will be retried.
    [letter] = [DeadLetter.model_validate_json(v) for v in rig.produced(NAMES.dlq)]
    assert (letter.reason, letter.stage) == ("too_large", "email")
    assert rig.statuses() == [] and rig.produced(NAMES.retries[Channel.EMAIL][0]) == []
    assert rig.sample("herald_batch_failures_total", agent="deliver.email") is None
