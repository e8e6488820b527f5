"""A Herald deployment under test for the reliability cases: worker processes on their own topics, every
provider pointed at its local fake, bulk producing, and the collection of everything that came out."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from adapters.broker.embedded import free_port
from adapters.email.sink import SmtpSink
from schemas.channels import Channel
from schemas.deadletter import DeadLetter
from schemas.notifications import notification_id
from schemas.status import DeliveryStatus
from tests.integration.stack import Stack, wait_ready
from tests.reliability.invariants import EVENT_ID, NOTIFICATION_ID, Expected, Observed
from tests.reliability.providers import (
    UnreliableFcm,
    UnreliableSendGrid,
    UnreliableSns,
    UnreliableTwilio,
)

# Fast retries so a case sees every attempt within seconds: 0.2 s, 0.4 s, 0.8 s, 1.6 s (±20 %).
RETRY_ENV = {
    "HERALD_RETRY_BASE_DELAY_SECONDS": "0.2",
    "HERALD_RETRY_MULTIPLIER": "2",
    "HERALD_RETRY_JITTER": "0.2",
    "HERALD_RETRY_MAX_ATTEMPTS": "5",
    "HERALD_RETRY_TIERS": "3",
}


@dataclass
class Providers:
    smtp: SmtpSink
    sendgrid: UnreliableSendGrid
    twilio: UnreliableTwilio
    sns: UnreliableSns
    fcm: UnreliableFcm
    fcm_key_file: Path

    def env(self, *, email: bool = True, sms: bool = True, push: bool = True) -> dict[str, str]:
        """Worker settings that point every provider at its fake (SMTP always, as email's last resort)."""
        host, port = self.smtp.address
        env = {"HERALD_SMTP_HOST": host, "HERALD_SMTP_PORT": str(port)}
        if email:
            env |= {
                "HERALD_SENDGRID_API_KEY": self.sendgrid.api_key,
                "HERALD_SENDGRID_BASE_URL": self.sendgrid.url,
                "HERALD_SENDGRID_TIMEOUT_SECONDS": "1",
            }
        if sms:
            env |= {
                "HERALD_TWILIO_ACCOUNT_SID": self.twilio.account_sid,
                "HERALD_TWILIO_AUTH_TOKEN": self.twilio.auth_token,
                "HERALD_TWILIO_FROM": "+15550000000",
                "HERALD_TWILIO_BASE_URL": self.twilio.url,
                "HERALD_TWILIO_TIMEOUT_SECONDS": "1",
                "HERALD_SNS_REGION": "us-east-1",
                "HERALD_SNS_ENDPOINT_URL": self.sns.url,
                "HERALD_SNS_ACCESS_KEY_ID": "testing",
                "HERALD_SNS_SECRET_ACCESS_KEY": "testing-sns-secret-key",
                "HERALD_SNS_TIMEOUT_SECONDS": "1",
            }
        if push:
            env |= {
                "HERALD_FCM_SERVICE_ACCOUNT_FILE": str(self.fcm_key_file),
                "HERALD_FCM_BASE_URL": self.fcm.url,
                "HERALD_FCM_TIMEOUT_SECONDS": "1",
            }
        return env

    def http_fakes(self) -> list[Any]:
        return [self.sendgrid, self.twilio, self.sns, self.fcm]

    def mark(self) -> dict[str, int]:
        marks = {type(f).__name__: len(f.accepted) for f in self.http_fakes()}
        return marks | {"smtp": len(self.smtp.messages)}

    def reset_faults(self) -> None:
        for fake in self.http_fakes():
            fake.reset()
        self.smtp.refusal = None

    def faults_injected(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for fake in self.http_fakes():
            for kind, count in fake.faults.injected.items():
                name = f"{type(fake).__name__.removeprefix('Unreliable').lower()}:{kind}"
                total[name] = total.get(name, 0) + count
        return total

    def record_into(
        self, observed: Observed, since: Mapping[str, int], users_by_phone: Mapping[str, str]
    ) -> None:
        """Trace each accepted request since `since` back to its notification id."""
        for mail in self.smtp.messages[since["smtp"] :]:
            observed.deliver(mail["X-Herald-Notification-Id"], Channel.EMAIL, str(mail["To"]))
        for request in self.sendgrid.accepted[since["UnreliableSendGrid"] :]:
            found = NOTIFICATION_ID.search(request.body.decode())
            observed.deliver(found.group() if found else None, Channel.EMAIL, request.body.decode())
        for request in self.fcm.accepted[since["UnreliableFcm"] :]:
            data = request.json()["message"].get("data", {})
            observed.deliver(data.get("herald_notification_id"), Channel.PUSH, json.dumps(data))
        texts = [
            (r.form().get("To", ""), r.form().get("Body", ""))
            for r in self.twilio.accepted[since["UnreliableTwilio"] :]
        ] + [
            (r.form().get("PhoneNumber", ""), r.form().get("Message", ""))
            for r in self.sns.accepted[since["UnreliableSns"] :]
        ]
        for phone, text in texts:
            found, user = EVENT_ID.search(text), users_by_phone.get(phone)
            nid = notification_id(found.group(), user, Channel.SMS) if found and user else None
            observed.deliver(nid, Channel.SMS, f"{phone} {text}")


class Tail:
    """Reads a topic from the beginning without a consumer group, keeping what arrived so far."""

    def __init__(self, bootstrap: list[str], topic: str) -> None:
        self.topic = topic
        self.records: list[Any] = []
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
        )
        self._started = False

    async def fetch(self) -> list[Any]:
        if not self._started:
            await self._consumer.start()
            self._started = True
            partitions: set[int] | None = None
            for _ in range(100):
                await self._consumer.topics()
                partitions = self._consumer.partitions_for_topic(self.topic)
                if partitions:
                    break
                await asyncio.sleep(0.1)
            assert partitions, f"topic {self.topic} has no partitions"
            tps = [TopicPartition(self.topic, p) for p in partitions]
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            if not batch:
                return self.records
            for items in batch.values():
                self.records.extend(items)

    async def close(self) -> None:
        if self._started:
            await self._consumer.stop()


async def produce_all(
    bootstrap: list[str], topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> None:
    """Produce many records at once (futures awaited together), acknowledged by the broker."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=8 * 1024 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass
class Deployment:
    """A Stack with its workers (each on its own metrics port and data dir) and the provider fakes."""

    stack: Stack
    providers: Providers
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    spawns: dict[str, int] = field(default_factory=dict)
    log_names: dict[str, str] = field(default_factory=dict)
    _events: int = 0

    @property
    def bootstrap(self) -> list[str]:
        return self.stack.bootstrap

    def spawn_worker(self, name: str) -> subprocess.Popen[bytes]:
        port = self.ports.setdefault(name, free_port())
        self.stack.extra_env.update(
            {"HERALD_WORKER_PORT": str(port), "HERALD_DATA_DIR": str(self.stack.tmp / f"data-{name}")}
        )
        self.spawns[name] = self.spawns.get(name, 0) + 1
        log_name = name if self.spawns[name] == 1 else f"{name}.{self.spawns[name]}"
        process = self.stack.spawn("worker", "-l", "info", log_name=log_name)
        self.workers[name] = process
        self.log_names[name] = log_name
        return process

    async def start_worker(self, name: str, timeout: float = 90) -> subprocess.Popen[bytes]:
        process = self.spawn_worker(name)
        try:
            await wait_ready(self.url(name, "/readyz"), process, timeout=timeout)
        except Exception:
            print(self.stack.log(self.log_names[name])[-4000:])
            raise
        return process

    def url(self, worker: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[worker]}{path}"

    def kill(self, name: str) -> None:
        process = self.workers[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def terminate(self, name: str) -> None:
        process = self.workers[name]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    # --- inputs -------------------------------------------------------------------------------------------
    def users(self, count: int) -> list[dict[str, Any]]:
        """Profiles with every address: an email, a valid French mobile number and one Android device."""
        made = []
        for n in range(count):
            user_id = f"u{self.tag}-{n}"
            made.append(
                {
                    "user_id": user_id,
                    "email": f"{user_id}@example.com",
                    # Always a valid French mobile number (not every +336xx prefix is).
                    "phone": f"+33612{n:06d}",
                    "devices": [{"token": f"tok-{user_id}", "platform": "android"}],
                    "display_name": f"User {n}",
                }
            )
        return made

    async def add_users(self, profiles: list[dict[str, Any]], *workers: str) -> None:
        """Publish profiles and wait until the workers (together) applied them all."""
        sample = "herald_profiles_applied_total"
        before = sum([await self.metric(w, sample) for w in workers])
        await produce_all(
            self.bootstrap,
            self.stack.topic("users"),
            [(p["user_id"].encode(), json.dumps(p).encode()) for p in profiles],
        )
        for p in profiles:
            self.profiles[p["user_id"]] = p
        deadline = time.monotonic() + 60
        while sum([await self.metric(w, sample) for w in workers]) < before + len(profiles):
            assert time.monotonic() < deadline, f"{sample} did not reach {before + len(profiles)}"
            await asyncio.sleep(0.2)

    def event(self, event_type: str, recipient: str, **data: Any) -> dict[str, Any]:
        self._events += 1
        event_id = f"E{self.tag}-{self._events}"
        base: dict[str, Any] = {
            "order.shipped": {"order_id": event_id, "carrier": "DHL", "items": ["Kettle"]},
            "security.login": {"device": event_id, "city": "Lyon"},
        }[event_type]
        return {
            "event_id": event_id,
            "type": event_type,
            "occurred_at": "2026-11-24T10:00:00Z",
            "recipients": [recipient],
            "data": base | data,
        }

    async def publish(self, events: list[dict[str, Any]]) -> None:
        await produce_all(
            self.bootstrap,
            self.stack.topic("events"),
            [(e["recipients"][0].encode(), json.dumps(e).encode()) for e in events],
        )

    # --- outputs ------------------------------------------------------------------------------------------
    async def metric(self, worker: str, sample: str) -> float:
        async with httpx.AsyncClient() as client:
            text = (await client.get(self.url(worker, "/metrics"), timeout=5)).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample + " "))

    async def metrics_text(self, worker: str) -> str:
        async with httpx.AsyncClient() as client:
            return (await client.get(self.url(worker, "/metrics"), timeout=5)).text

    async def wait_metric(self, worker: str, sample: str, at_least: float, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            value = await self.metric(worker, sample)
            if value >= at_least:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{sample} is {value}, not {at_least}, after {timeout} s")

    def users_by_phone(self) -> dict[str, str]:
        return {p["phone"]: uid for uid, p in self.profiles.items() if p.get("phone")}


class Outputs:
    """Everything a deployment produced since `start()`: provider records, DLQ, status and in-app topics."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        stack = deployment.stack
        self.dlq = Tail(stack.bootstrap, stack.topic("dlq"))
        self.status = Tail(stack.bootstrap, stack.topic("status"))
        self.inapp = Tail(stack.bootstrap, stack.topic("deliver.inapp"))
        self.since = deployment.providers.mark()

    async def observe(self) -> Observed:
        observed = Observed()
        self.deployment.providers.record_into(observed, self.since, self.deployment.users_by_phone())
        for record in await self.inapp.fetch():
            observed.inapp_topic[json.loads(record.value)["notification_id"]] += 1
        for record in await self.dlq.fetch():
            try:
                observed.dead_letters.append(DeadLetter.model_validate_json(record.value))
            except ValidationError as exc:
                # Kept (so the rest is still checked) and reported: a DLQ record must match its own schema.
                observed.malformed_dead_letters.append(f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
                repaired = json.dumps({"key_b64": None} | json.loads(record.value))
                observed.dead_letters.append(DeadLetter.model_validate_json(repaired))
        observed.statuses = [DeliveryStatus.model_validate_json(r.value) for r in await self.status.fetch()]
        return observed

    async def settle(
        self,
        expected: Mapping[str, Expected],
        done: Callable[[Observed], bool] | None = None,
        timeout: float = 120,
        quiet: float = 2.0,
        progress: Callable[[], Awaitable[None]] | None = None,
    ) -> Observed:
        """Wait until every expected notification is accounted for (delivered or dead-lettered), then a
        little longer, so late duplicates would show."""
        from tests.reliability.invariants import dead_lettered_ids

        deadline = time.monotonic() + timeout
        observed = await self.observe()
        while time.monotonic() < deadline:
            observed = await self.observe()
            accounted = set(observed.deliveries) | set(observed.inapp_topic)
            for letter in observed.dead_letters:
                accounted |= dead_lettered_ids(letter, expected)
            if set(expected) <= accounted and (done is None or done(observed)):
                break
            if progress is not None:
                await progress()
            await asyncio.sleep(0.5)
        await asyncio.sleep(quiet)
        return await self.observe()

    async def close(self) -> None:
        for tail in (self.dlq, self.status, self.inapp):
            await tail.close()
