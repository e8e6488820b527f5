"""Producing validated records from the command line: events and profiles, checked before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ValidationError

from kernel.errors import InvalidInput
from schemas.base import describe_validation_error
from schemas.events import DomainEvent
from schemas.users import ProfileUpdate

M = TypeVar("M", bound=BaseModel)


def _documents(text: str) -> list[Any]:
    """One JSON document, a JSON array of them, or JSON lines."""
    stripped = text.strip()
    if not stripped:
        raise InvalidInput("input is empty")
    try:
        document = json.loads(stripped)
    except json.JSONDecodeError as first_error:
        try:
            return [json.loads(line) for line in stripped.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise InvalidInput(
                f"not valid JSON: {first_error.msg} at line {first_error.lineno} column {first_error.colno}"
            ) from None
    return document if isinstance(document, list) else [document]


def _parse_all(text: str, model: type[M], what: str) -> list[M]:
    """Every document of the input as `model`; the first invalid one is named (by position and field)."""
    parsed = []
    for index, document in enumerate(_documents(text)):
        try:
            parsed.append(model.model_validate_json(json.dumps(document)))
        except ValidationError as exc:
            raise InvalidInput(f"{what} #{index + 1}: {describe_validation_error(exc)}") from None
    return parsed


def parse_events(text: str) -> list[DomainEvent]:
    return _parse_all(text, DomainEvent, "event")


def parse_profiles(text: str) -> list[ProfileUpdate]:
    return _parse_all(text, ProfileUpdate, "profile")


async def produce(
    bootstrap: list[str],
    topic: str,
    records: Iterable[tuple[bytes, bytes]],
    headers: Sequence[tuple[str, bytes]] = (),
) -> int:
    """Send (key, value) records, each with `headers`, and wait until the broker acknowledged every one."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=15000)
    await producer.start()
    count = 0
    try:
        futures = [
            await producer.send(topic, key=key, value=value, headers=list(headers) or None)
            for key, value in records
        ]
        for future in futures:
            await future
            count += 1
    finally:
        await producer.stop()
    return count


def event_records(events: Iterable[DomainEvent]) -> list[tuple[bytes, bytes]]:
    # Keyed by the first recipient: a single-recipient event keeps that user's events in order.
    return [(event.recipients[0].encode(), event.to_json()) for event in events]


def profile_records(profiles: Iterable[ProfileUpdate]) -> list[tuple[bytes, bytes]]:
    # The key must be the user id: the directory's table is partitioned by it, like the routed events.
    return [(profile.user_id.encode(), profile.to_json()) for profile in profiles]
