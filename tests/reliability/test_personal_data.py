"""Personal data stays out of logs and dead-letter details: a run with unknown recipients, profiles with
invalid addresses, and providers that refuse while quoting the number, address or device token (as Twilio,
SendGrid and FCM word their refusals), then every line the worker logged and every dead letter's `detail`
searched for the users' ids, email addresses, phone numbers and device tokens. Only pseudonyms stand for
them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kernel.privacy import Pseudonyms
from schemas.deadletter import DeadLetter
from tests.fakes.fcm import fcm_error
from tests.fakes.http import RecordedRequest, Reply
from tests.fakes.sendgrid import sendgrid_error
from tests.fakes.twilio import twilio_error
from tests.reliability.harness import Deployment, Outputs, produce_all
from tests.reliability.invariants import Observed, check, expected_notifications

KEY = "reliability-pseudonym-key-of-32-characters"
USERS = 12  # 0-2 served, 3-5 email refused, 6-8 number refused, 9-11 device token refused
UNKNOWN = 4


@contextmanager
def refusing(fake: Any, refusal: Callable[[RecordedRequest], Reply | None]) -> Iterator[None]:
    """The shared provider fake answers `refusal(request)` where it gives one, as it otherwise would."""
    answer = fake.answer
    fake.answer = lambda request: refusal(request) or answer(request)
    try:
        yield
    finally:
        del fake.answer


def _invalid_profiles(deployment: Deployment) -> list[dict[str, Any]]:
    """Profiles the directory refuses; each value is refused for a reason the dead letter names."""
    tag = deployment.tag
    return [
        # Valid numbers written otherwise than E.164: the refusal once quoted the number rewritten.
        {"user_id": f"bad{tag}-0", "phone": "+33 6 12 99 00 01"},
        {"user_id": f"bad{tag}-1", "phone": "+33-6-12-99-00-02"},
        {"user_id": f"bad{tag}-2", "email": f"bad{tag}-2@@example.com"},
        {"user_id": f"bad{tag}-3", "email": f"bad{tag}-3@example.com", "phone": "0612990004"},
    ]


def _personal_values(profiles: list[dict[str, Any]], unknown: list[str]) -> set[str]:
    values = set(unknown)
    for profile in profiles:
        values.add(profile["user_id"])
        for field in ("email", "phone"):
            if profile.get(field):
                values.add(profile[field])
        phone = profile.get("phone")
        if phone:
            digits = "".join(ch for ch in phone if ch.isdigit())
            values |= {digits, "+" + digits}  # as written, bare, and in E.164 form
        values |= {d["token"] for d in profile.get("devices", [])}
    return values


def _found(values: set[str], texts: dict[str, str]) -> list[str]:
    return [f"{value!r} in {where}" for where, text in texts.items() for value in values if value in text]


async def test_no_user_id_address_number_or_token_reaches_a_log_line_or_a_dead_letter_detail(
    deployment: Deployment, report: Any
) -> None:
    providers = deployment.providers
    # No timeouts are injected here, so the providers get a production-like timeout rather than the harness's
    # 1 s: the worker's first FCM calls (OAuth token, then five sends at once) once took longer than 1 s on a
    # busy machine, retried until the circuit gave up, and the refused tokens were never quoted to be checked.
    timeouts = {f"HERALD_{p}_TIMEOUT_SECONDS": "10" for p in ("FCM", "SENDGRID", "TWILIO", "SNS")}
    deployment.stack.extra_env.update(providers.env() | timeouts | {"HERALD_PSEUDONYM_KEY": KEY})
    await deployment.start_worker("worker-1")
    users = deployment.users(USERS)
    await deployment.add_users(users, "worker-1")
    refused_emails = {u["email"] for u in users[3:6]}
    refused_numbers = {u["phone"] for u in users[6:9]}
    refused_tokens = {u["devices"][0]["token"] for u in users[9:12]}
    for token in refused_tokens:
        # FCM's wording when it quotes the target: the token would land in the dead letter's detail.
        providers.fcm.refuse(
            token, fcm_error("INVALID_ARGUMENT", f"The registration token is not a valid FCM token: {token}")
        )

    def twilio_refusal(request: RecordedRequest) -> Reply | None:
        to = request.form().get("To", "") if request.method == "POST" else ""
        if to in refused_numbers:
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        return None

    def sendgrid_refusal(request: RecordedRequest) -> Reply | None:
        if request.method != "POST" or not request.path.endswith("/mail/send"):
            return None
        to = request.json()["personalizations"][0]["to"][0]["email"]
        return (
            sendgrid_error(400, f"Does not contain a valid address: {to}") if to in refused_emails else None
        )

    unknown = [f"ghost{deployment.tag}-{n}" for n in range(UNKNOWN)]
    invalid = _invalid_profiles(deployment)
    events = [
        deployment.event(kind, u["user_id"]) for u in users for kind in ("security.login", "order.shipped")
    ]
    events += [deployment.event("order.shipped", ghost) for ghost in unknown]
    expected = expected_notifications(events, deployment.profiles)
    outputs = Outputs(deployment)
    started = time.monotonic()

    names = Pseudonyms(KEY.encode())

    def everything_refused_is_parked(observed: Observed) -> bool:
        # Every refused value must be on the DLQ (named by its pseudonym), not only the directory's and the
        # router's dead letters: push refusals come last (FCM's OAuth round trip), and a snapshot taken
        # before they arrive names fewer tokens than were refused.
        stages = [letter.stage for letter in observed.dead_letters]
        details = [letter.detail for letter in observed.dead_letters]
        refused = refused_emails | refused_numbers | refused_tokens
        return (
            stages.count("directory") >= len(invalid)
            and stages.count("route") >= len(unknown)
            and all(any(names(value) in detail for detail in details) for value in refused)
        )

    with refusing(providers.twilio, twilio_refusal), refusing(providers.sendgrid, sendgrid_refusal):
        await produce_all(
            deployment.bootstrap,
            deployment.stack.topic("users"),
            [(p["user_id"].encode(), json.dumps(p).encode()) for p in invalid],
        )
        await deployment.publish(events)
        observed = await outputs.settle(expected, done=everything_refused_is_parked, timeout=120)
    await outputs.close()
    deployment.terminate("worker-1")  # its last lines are in the log too

    figures = check("personal data", len(events), expected, observed)
    values = _personal_values(users + invalid, unknown)
    letters: list[DeadLetter] = observed.dead_letters
    details = {
        f"dead letter {n} ({letter.stage}, {letter.reason})": letter.detail
        for n, letter in enumerate(letters)
    }
    logs = {log.name: log.read_text(errors="replace") for log in deployment.stack.tmp.glob("*.log")}
    in_details, in_logs = _found(values, details), _found(values, logs)
    # What the details do say: pseudonyms under this deployment's key, so an operator can still group by user.
    named = {
        "unknown users": [g for g in unknown if any(names(g) in d for d in details.values())],
        "refused numbers": [p for p in refused_numbers if any(names(p) in d for d in details.values())],
        "refused addresses": [e for e in refused_emails if any(names(e) in d for d in details.values())],
        "refused tokens": [t for t in refused_tokens if any(names(t) in d for d in details.values())],
    }
    reasons = {(letter.stage, letter.reason) for letter in letters}
    figures.hostile_inputs = (
        len(unknown) + len(invalid) + len(refused_emails | refused_numbers | refused_tokens)
    )
    figures.unexpected += len(in_details) + len(in_logs)
    figures.notes = {
        "dead_letters": len(letters),
        "searched_values": len(values),
        "log_lines": sum(text.count("\n") for text in logs.values()),
        "in_details": len(in_details),
        "in_logs": len(in_logs),
        "named_by_pseudonym": {k: len(v) for k, v in named.items()},
        "seconds": round(time.monotonic() - started, 1),
    }
    report(figures)
    assert not in_details, in_details[:10]
    assert not in_logs, in_logs[:10]
    assert not figures.problems(), figures.problems()
    # The run did exercise every path: each kind of refusal was dead-lettered, named by its pseudonym.
    assert {("route", "unknown_user"), ("directory", "invalid_profile"), ("sms", "invalid_number")} <= reasons
    assert {("email", "invalid_request"), ("push", "invalid_request")} <= reasons
    assert {k: len(v) for k, v in named.items()} == {
        "unknown users": UNKNOWN,
        "refused numbers": 3,
        "refused addresses": 3,
        "refused tokens": 3,
    }
