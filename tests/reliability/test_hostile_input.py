"""Hostile input, generated with hypothesis in the test process and produced in one batch to a running
worker: random bytes, wrong types, huge and deeply nested payloads, odd Unicode and template syntax in data,
as events, profiles, preferences and rulesets. The worker never crashes or stalls, each bad record is on the
DLQ with its reason, and the good records around them are delivered (template syntax in data is shown)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events import DomainEvent
from schemas.preferences import PreferencesUpdate
from schemas.users import UserProfile
from tests.integration.stack import ROOT
from tests.reliability.harness import Deployment, Outputs, produce_all
from tests.reliability.invariants import check, expected_notifications

EXAMPLES = 120
INJECTIONS = [
    "{{ 7*7 }}",
    "{{ settings }}",
    "{{ config.items() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{% include '/etc/passwd' %}",
    "${HERALD_JWT_SECRET} $(id) `id`",
]
ODD_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S", "Z", "C"]), max_size=40
)
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ODD_TEXT
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
    max_leaves=12,
)


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def collect(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """Draw `count` examples through @given (hypothesis' own way of exploring), keeping them for one batch."""
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def keep(value: Any) -> None:
        drawn.append(value)

    keep()
    return drawn


def event_records(users: list[str]) -> st.SearchStrategy[bytes]:
    good = {
        "event_id": "x",
        "type": "order.shipped",
        "occurred_at": "2026-11-24T10:00:00Z",
        "recipients": users[:1],
        "data": {"order_id": "1"},
    }
    wrong_types = st.fixed_dictionaries(
        {},
        optional={
            "event_id": JSON_VALUE,
            "type": JSON_VALUE,
            "occurred_at": JSON_VALUE,
            "recipients": JSON_VALUE,
            "data": JSON_VALUE,
            "priority": JSON_VALUE,
            "schema_version": JSON_VALUE,
        },
    ).map(lambda d: json.dumps(d).encode())
    one_field_off = st.sampled_from(sorted(good)).flatmap(
        lambda name: JSON_VALUE.map(lambda v: json.dumps(good | {name: v}).encode())
    )
    odd_unicode = ODD_TEXT.map(
        lambda t: json.dumps(good | {"event_id": t or "\u202e", "recipients": [t + "\u0000"]}).encode()
    )
    raw = st.binary(max_size=300)
    lone_surrogate = st.just(b'{"event_id": "\\ud800", "type": "order.shipped"}')
    return st.one_of(raw, wrong_types, one_field_off, odd_unicode, lone_surrogate)


def is_valid(model: Any, raw: bytes) -> bool:
    try:
        model.model_validate_json(raw)
    except (ValidationError, ValueError):
        return False
    return True


async def test_hostile_records_are_dead_lettered_and_good_ones_around_them_delivered(
    deployment: Deployment, report: Any
) -> None:
    deployment.stack.extra_env.update(deployment.providers.env(email=False, sms=False, push=False))
    await deployment.start_worker("worker-1")
    users = deployment.users(10)
    users[1]["display_name"] = "{{ 7*7 }} {% include '/etc/passwd' %}"
    await deployment.add_users(users, "worker-1")
    user_ids = [u["user_id"] for u in users]

    hostile = collect(event_records(user_ids), EXAMPLES)
    hostile += [
        json.dumps(
            {
                "event_id": "huge",
                "type": "order.shipped",
                "occurred_at": "2026-11-24T10:00:00Z",
                "recipients": ["x" * 300] * 1001,
                "data": {},
            }
        ).encode(),
        (
            '{"event_id":"deep","type":"order.shipped","occurred_at":"2026-11-24T10:00:00Z","recipients":["'
            + user_ids[0]
            + '"],"data":'
            + nested(5000)
            + "}"
        ).encode(),
        b"\xff\xfe" + "\u210c\U0001d522\U0001d52f".encode("utf-16-le"),
        b"",
    ]
    hostile = [raw for raw in hostile if not is_valid(DomainEvent, raw)]
    good: list[dict[str, Any]] = []
    records: list[tuple[bytes | None, bytes | None]] = []
    for n, raw in enumerate(hostile):
        records.append((None if n % 7 == 0 else b"k", raw))
        # Good events around the bad, some carrying template syntax in their data (shown, never run).
        event = deployment.event("order.shipped", user_ids[n % len(user_ids)])
        event["data"]["carrier"] = INJECTIONS[n % len(INJECTIONS)]
        good.append(event)
        records.append((event["recipients"][0].encode(), json.dumps(event).encode()))
    records.append((b"k", None))  # a null value (tombstone) on the events topic
    expected = expected_notifications(good, deployment.profiles)
    outputs = Outputs(deployment)
    started = time.monotonic()
    await produce_all(deployment.bootstrap, deployment.stack.topic("events"), records)

    # Profiles and preferences: hostile records on the compacted topics, keyed by user or not.
    bad_profiles = [
        raw
        for raw in collect(
            st.one_of(
                st.binary(max_size=200),
                st.fixed_dictionaries(
                    {"user_id": JSON_VALUE},
                    optional={
                        "email": JSON_VALUE,
                        "phone": JSON_VALUE,
                        "devices": JSON_VALUE,
                        "timezone": JSON_VALUE,
                    },
                ).map(lambda d: json.dumps(d).encode()),
            ),
            EXAMPLES // 2,
        )
        if not is_valid(UserProfile, raw)
    ]
    bad_preferences = [
        raw
        for raw in collect(
            st.one_of(
                st.binary(max_size=200),
                st.fixed_dictionaries(
                    {"user_id": st.just(user_ids[2])},
                    optional={"muted": JSON_VALUE, "channels": JSON_VALUE, "quiet_hours": JSON_VALUE},
                ).map(lambda d: json.dumps(d).encode()),
            ),
            EXAMPLES // 2,
        )
        if not is_valid(PreferencesUpdate, raw)
    ]
    await produce_all(
        deployment.bootstrap,
        deployment.stack.topic("users"),
        [(user_ids[3].encode(), raw) for raw in bad_profiles],
    )
    await produce_all(
        deployment.bootstrap,
        deployment.stack.topic("preferences"),
        [(user_ids[2].encode(), raw) for raw in bad_preferences],
    )
    # Rulesets: `herald rules apply` refuses bad files before publishing; raw bad rulesets on the topic are
    # refused by the worker, which keeps the rules in force.
    bad_rules = [
        "rules: 7",
        "rules:\n  - match: '{{ 7*7 }}'\n    channels: {email: {template: '../../etc'}}",
        "{{ settings }}",
        "rules:\n  - match: x\n    channels: {fax: {template: order_shipped}}",
    ]
    refused_by_cli = 0
    for text in bad_rules:
        result = subprocess.run(
            [sys.executable, "-m", "streams", "rules", "apply", "-"],
            input=text.encode(),
            env=deployment.stack.env,
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
        refused_by_cli += result.returncode != 0 and b"nothing published" in result.stderr
    await produce_all(
        deployment.bootstrap,
        deployment.stack.topic("rules"),
        [(b"ruleset", raw) for raw in [b"\x00\x01", b"{}", b'{"rules": "x"}', nested(3000).encode()]],
    )

    # A last good event after everything: if the worker stalled, it never arrives.
    sentinel = deployment.event("order.shipped", user_ids[0])
    expected |= expected_notifications([sentinel], deployment.profiles)
    await deployment.publish([sentinel])
    observed = await outputs.settle(expected, timeout=90)
    await outputs.close()

    figures = check("hostile input", len(good) + 1, expected, observed)
    by_original = {letter.original: letter for letter in observed.dead_letters}
    bad = hostile + bad_profiles + bad_preferences
    missing = [raw[:80] for raw in bad if raw not in by_original]
    figures.hostile_inputs = len(bad) + 1 + len(bad_rules) + 4
    figures.notes = {
        "bad_events": len(hostile) + 1,
        "bad_profiles": len(bad_profiles),
        "bad_preferences": len(bad_preferences),
        "bad_rulesets_cli_refused": f"{refused_by_cli}/{len(bad_rules)}",
        "bad_rulesets_on_topic": 4,
        "seconds": round(time.monotonic() - started, 1),
    }
    figures.notes["hostile_dlq_reasons"] = sorted(
        {f"{letter.stage}:{letter.reason}" for letter in observed.dead_letters}
    )
    report(figures)

    assert deployment.workers["worker-1"].poll() is None, "the worker died"
    assert not missing, f"{len(missing)} bad records not on the DLQ, e.g. {missing[:5]}"
    assert all(letter.reason and letter.detail for letter in observed.dead_letters)
    assert refused_by_cli == len(bad_rules)
    assert await deployment.metric("worker-1", "herald_rules_rejected_total") >= 4
    # Template syntax in data is shown as text: nothing was evaluated.
    mails = deployment.providers.smtp.messages[outputs.since["smtp"] :]
    texts = [m.get_body(preferencelist=("plain",)).get_content() for m in mails]
    assert any("{{ 7*7 }}" in t for t in texts) and not any("with 49" in t or "Hello 49" in t for t in texts)
    assert not any("root:x:0" in t or "uid=" in t or "<class" in t for t in texts)
    assert not figures.problems(), figures.problems()
