from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from kernel.errors import InvalidEvent, InvalidInput
from schemas.events import DomainEvent
from streams.cli.publishing import parse_events, parse_profiles
from streams.routing.intake import parse_event

GOOD = {
    "event_id": "e1",
    "type": "order.shipped",
    "occurred_at": "2026-11-24T10:00:00Z",
    "recipients": ["alice"],
    "data": {"order_id": "A-1"},
}


def test_event_round_trips_as_json() -> None:
    event = DomainEvent.model_validate_json(json.dumps(GOOD))
    assert DomainEvent.model_validate_json(event.to_json()) == event
    assert event.dedup_key == "e1"
    assert event.priority.value == "normal"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"recipients": []}, "recipients"),
        ({"occurred_at": "2026-11-24T10:00:00"}, "occurred_at"),  # no timezone
        ({"event_id": 7}, "event_id"),  # strict: no coercion
        ({"type": "order shipped"}, "type"),
        ({"schema_version": 2}, "schema_version"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_events_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidEvent, match=field):
        parse_event(json.dumps({**GOOD, **change}).encode())


def test_not_json_is_invalid_event() -> None:
    with pytest.raises(InvalidEvent):
        parse_event(b"\xff not json")
    with pytest.raises(InvalidEvent, match="empty"):
        parse_event(None)


def test_validation_errors_do_not_echo_values() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(json.dumps({**GOOD, "recipients": "secret-user@example.com"}).encode())
    assert "secret-user" not in info.value.detail


def test_publish_parsing_accepts_object_array_and_lines() -> None:
    assert len(parse_events(json.dumps(GOOD))) == 1
    assert len(parse_events(json.dumps([GOOD, GOOD]))) == 2
    assert len(parse_events(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")) == 2


def test_publish_parsing_reports_the_field() -> None:
    with pytest.raises(InvalidInput, match=r"event #2: recipients"):
        parse_events(json.dumps([GOOD, {**GOOD, "recipients": []}]))
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_events("{nope")
    with pytest.raises(InvalidInput, match="email"):
        parse_profiles(json.dumps({"user_id": "a", "email": "not-an-address"}))


def test_strict_models_refuse_coercion() -> None:
    with pytest.raises(ValidationError):
        DomainEvent.model_validate({**GOOD, "recipients": "alice"})


def test_profile_validation_refuses_bad_addresses_with_the_reason() -> None:
    from schemas.users import ProfileUpdate

    for field, value, reason in [
        ("email", "alice@", "email"),
        ("phone", "+3361234", "phone"),
        ("phone", "0612345678", "E.164"),
        ("phone", "+33 6 12 34 56 78", "E.164"),
        ("timezone", "Mars/Olympus", "IANA"),
    ]:
        with pytest.raises(InvalidInput, match=reason) as caught:
            parse_profiles(json.dumps({"user_id": "a", field: value}))
        # The reason, never the value (nor the number rewritten): these messages reach dead letters.
        assert value not in str(caught.value) and "33612345678" not in str(caught.value)
    assert ProfileUpdate.model_validate({"user_id": "a", "phone": "+33612345678"}).phone == "+33612345678"


def test_stored_profiles_skip_only_the_address_checks_already_made() -> None:
    """A profile read back from Herald's own table was checked when stored: its address, number and timezone
    are not parsed again (the costly part of a read), but its types and bounds still are."""
    from schemas.users import STORED, UserProfile

    stored = {"user_id": "a", "email": "Alice@Example.COM", "phone": "+33612345678", "timezone": "Asia/Tokyo"}
    assert UserProfile.model_validate(stored, strict=False, context=STORED).email == "Alice@Example.COM"
    # Outside that context, the same value is checked (and normalised) as on input.
    assert UserProfile.model_validate(stored, strict=False).email == "Alice@example.com"
    for wrong in [{"phone": 33612345678}, {"email": "a" * 400}, {"devices": [{"token": "t"}]}]:
        with pytest.raises(ValidationError):
            UserProfile.model_validate({"user_id": "a", **wrong}, strict=False, context=STORED)
    # Only Herald's own marker skips the checks: a look-alike context from elsewhere does not.
    with pytest.raises(ValidationError):
        lookalike = {"stored": True}
        UserProfile.model_validate({"user_id": "a", "email": "alice@"}, strict=False, context=lookalike)


def test_partial_update_merges_and_null_clears() -> None:
    from schemas.users import ProfileUpdate, UserProfile

    stored = UserProfile.model_validate(
        {
            "user_id": "a",
            "email": "a@example.com",
            "phone": "+33612345678",
            "locale": "fr",
            "timezone": "Europe/Paris",
        },
        strict=False,
    )
    merged = ProfileUpdate.model_validate_json(b'{"user_id": "a", "locale": "de"}').apply_to(stored)
    assert (merged.email, merged.phone, merged.locale, merged.timezone) == (
        "a@example.com",
        "+33612345678",
        "de",
        "Europe/Paris",
    )
    cleared = ProfileUpdate.model_validate_json(b'{"user_id": "a", "phone": null, "locale": null}').apply_to(
        merged
    )
    assert cleared.phone is None and cleared.locale == "en" and cleared.email == "a@example.com"
    fresh = ProfileUpdate.model_validate_json(b'{"user_id": "b", "email": "b@example.com"}').apply_to(None)
    assert fresh.timezone == "UTC" and fresh.devices == []
    # A null survives the wire: it is how a field is cleared.
    assert b'"phone":null' in ProfileUpdate(user_id="a", phone=None).to_json()


def test_whole_profile_records_survive_compaction() -> None:
    from schemas.users import ProfileUpdate, UserProfile

    partial = ProfileUpdate.model_validate_json(b'{"user_id": "a", "locale": "de"}')
    assert not partial.is_whole
    merged = partial.apply_to(
        UserProfile.model_validate({"user_id": "a", "phone": "+33612345678"}, strict=False)
    )
    whole = ProfileUpdate.whole(merged)
    assert whole.is_whole
    # Sent and read back, the whole record rebuilds the same profile from nothing.
    again = ProfileUpdate.model_validate_json(whole.to_json())
    assert again.is_whole and again.apply_to(None) == merged
