"""`herald trace` as the support desk runs it, on a real broker: one event's journey across recipients and
partitions (a skip, a failover, a push), one user's notifications, the range by --since and --until, and
the exit code when nothing matches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from adapters.broker.topics import ensure_topics
from schemas.channels import Channel
from schemas.status import DeliveryStatus
from streams.state.directory import home_partition
from tests.integration.stack import Stack, herald

pytestmark = pytest.mark.integration

PARTITIONS = 4  # what Stack gives HERALD_PARTITIONS
OLD_RECORDS_PER_USER = 40  # 5 to 4 hours old, before every --since below; one in three not a status
ANN, EVE = "ann", "eve"


def status(ago: timedelta, recipient: str, event_id: str, channel: str, **fields: Any) -> DeliveryStatus:
    values: dict[str, Any] = {
        "notification_id": f"ntf_{event_id}_{recipient}_{channel}",
        "event_id": event_id,
        "recipient": recipient,
        "channel": Channel(channel),
        "provider": "-",
        "outcome": "delivered",
        "attempt": 1,
        "at": NOW - ago,
    } | fields
    return DeliveryStatus.model_validate(values)


NOW = datetime.now(UTC)
MINUTES = timedelta(minutes=1)
# The journey of ev-a: ann opted out of SMS; her email failed at SendGrid and went out through SMTP (the
# failover); eve got a push. ev-b went to both. Three hours earlier ann's ev-a had been held for quiet hours.
OLD_DEFERRED = status(180 * MINUTES, ANN, "ev-a", "email", outcome="deferred", reason="quiet_hours")
SKIPPED = status(31 * MINUTES, ANN, "ev-a", "sms", outcome="skipped", reason="opted_out")
FAILED = status(
    30 * MINUTES,
    ANN,
    "ev-a",
    "email",
    provider="sendgrid",
    outcome="failed",
    reason="provider_unavailable",
    provider_code="503",
    latency_seconds=2.0,
)
FAILED_OVER = status(29 * MINUTES, ANN, "ev-a", "email", provider="smtp", attempt=2, latency_seconds=0.25)
PUSHED = status(28 * MINUTES, EVE, "ev-a", "push", provider="fcm", provider_message_id="projects/p/m/1")
ANN_B = status(10 * MINUTES, ANN, "ev-b", "inapp", provider="gateway")
EVE_B = status(9 * MINUTES, EVE, "ev-b", "email", outcome="skipped", reason="muted")


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.fixture(scope="module")
def stack(stack_factory: Any) -> Iterator[Stack]:
    """A status topic of 4 partitions holding, per user: old records (some not statuses), then the
    journeys above, produced as Herald produces them (keyed by recipient, the default partitioner, the
    record's time when it was written), in an order unlike their times."""
    made: Stack = stack_factory()
    assert home_partition(ANN, PARTITIONS) != home_partition(EVE, PARTITIONS)

    async def fill() -> None:
        topic = made.topic("status")
        await ensure_topics(made.bootstrap, [topic], PARTITIONS, 1)
        producer = AIOKafkaProducer(bootstrap_servers=made.bootstrap, acks="all")
        await producer.start()
        try:
            for user in (ANN, EVE):
                for n in range(OLD_RECORDS_PER_USER):
                    at = NOW - (300 - n) * MINUTES
                    value = (
                        b"not a status"
                        if n % 3 == 0
                        else status(NOW - at, user, f"old-{n}", "email").to_json()
                    )
                    await producer.send(topic, value, key=user.encode(), timestamp_ms=millis(at))
            await producer.send(
                topic, OLD_DEFERRED.to_json(), key=b"ann", timestamp_ms=millis(OLD_DEFERRED.at)
            )
            for record in (FAILED_OVER, PUSHED, SKIPPED, FAILED, EVE_B, ANN_B):
                written = record.at + 5 * MINUTES if record is SKIPPED else record.at
                await producer.send(
                    topic, record.to_json(), key=record.recipient.encode(), timestamp_ms=millis(written)
                )
            # One record in the range that is not a status: counted and left out.
            await producer.send(topic, b"{}", key=b"ann", timestamp_ms=millis(NOW - 8 * MINUTES))
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(fill())
    yield made


def rows(stdout: str) -> list[list[str]]:
    """The table's data rows, split on runs of spaces (no cell here holds two spaces)."""
    return [line.split() for line in stdout.splitlines()[1:]]


def test_an_event_s_journey_across_recipients_in_time_order(stack: Stack) -> None:
    result = herald(stack, "trace", "ev-a", "--since", "1h")
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header[2:] == [
        "recipient",
        "channel",
        "provider",
        "outcome",
        "attempt",
        "reason",
        "notification",
        "latency",
    ]
    # Without the time: [recipient, channel, provider, outcome, attempt, reason..., notification, latency].
    assert [row[2:] for row in rows(result.stdout)] == [
        ["ann", "sms", "-", "skipped", "1", "opted_out", "ntf_ev-a_ann…", "-"],
        [
            "ann",
            "email",
            "sendgrid",
            "failed",
            "1",
            "provider_unavailable",
            "(503)",
            "ntf_ev-a_ann…",
            "2.000s",
        ],
        ["ann", "email", "smtp", "delivered", "2", "-", "ntf_ev-a_ann…", "0.250s"],
        ["eve", "push", "fcm", "delivered", "1", "-", "ntf_ev-a_eve…", "-"],
    ]
    shown = [" ".join(row[:2]) for row in rows(result.stdout)]
    expected = [
        record.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] for record in (SKIPPED, FAILED, FAILED_OVER, PUSHED)
    ]
    assert shown == expected
    # The old records before --since were never decoded: only the one in the range is reported.
    assert "\n1 record(s) " in "\n" + result.stderr


def test_a_user_s_notifications_as_json_lines(stack: Stack) -> None:
    result = herald(stack, "trace", "--user", "ann", "--since", "1h", "--json")
    assert result.returncode == 0, result.stderr
    read = [DeliveryStatus.model_validate_json(line) for line in result.stdout.splitlines()]
    assert read == [SKIPPED, FAILED, FAILED_OVER, ANN_B]
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        json.loads(record.to_json()) for record in read
    ]


def test_a_user_and_an_event_together(stack: Stack) -> None:
    result = herald(stack, "trace", "ev-b", "--user", "eve", "--json")  # the default range: a day
    assert result.returncode == 0, result.stderr
    assert [DeliveryStatus.model_validate_json(line) for line in result.stdout.splitlines()] == [EVE_B]


def test_since_and_until_bound_the_range(stack: Stack) -> None:
    since = (NOW - 200 * MINUTES).isoformat()
    result = herald(stack, "trace", "ev-a", "--user", "ann", "--since", since, "--until", "2h", "--json")
    assert result.returncode == 0, result.stderr
    assert [DeliveryStatus.model_validate_json(line) for line in result.stdout.splitlines()] == [OLD_DEFERRED]
    wider = herald(stack, "trace", "ev-a", "--user", "ann", "--since", "4h", "--json")
    assert [DeliveryStatus.model_validate_json(line) for line in wider.stdout.splitlines()] == [
        OLD_DEFERRED,
        SKIPPED,
        FAILED,
        FAILED_OVER,
    ]


def test_nothing_matched_exits_1_and_says_what_was_searched(stack: Stack) -> None:
    result = herald(stack, "trace", "ev-none", "--since", "1h")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no statuses for event ev-none" in result.stderr and stack.topic("status") in result.stderr
    # Eve's ev-a push is older than 15 minutes.
    recent = herald(stack, "trace", "ev-a", "--user", "eve", "--since", "15m")
    assert recent.returncode == 1
    assert "no statuses for event ev-a for user eve" in recent.stderr
