from __future__ import annotations

import json

import pytest

from kernel.errors import InvalidInput
from streams.cli.preference_args import build_update


def update(**kwargs: object) -> dict[str, object]:
    args: dict[str, object] = {"mute": None, "opt_out": (), "opt_in": (), "quiet": (), "no_quiet": ()}
    args.update(kwargs)
    return json.loads(build_update("ann", **args).to_json())  # type: ignore[arg-type, no-any-return]


def test_flags_become_a_partial_update() -> None:
    assert update(opt_out=("marketing:email", "*:sms")) == {
        "user_id": "ann",
        "channels": {"sms": False},
        "categories": {"marketing": {"email": False}},
    }
    quiet = update(quiet=("weekdays=22:00-07:00",), no_quiet=("sat",))["quiet_hours"]
    assert isinstance(quiet, dict)
    assert (
        quiet["mon"] == {"start": "22:00:00", "end": "07:00:00"}
        and quiet["sat"] is None
        and "sun" not in quiet
    )
    assert update(mute=True) == {"user_id": "ann", "muted": True}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "nothing to change"),
        ({"opt_out": ("email",)}, "CATEGORY:CHANNEL"),
        ({"opt_out": ("marketing:fax",)}, "fax|channel"),
        ({"quiet": ("mon=22-07",)}, "DAYS=HH:MM-HH:MM"),
        ({"quiet": ("someday=22:00-07:00",)}, "not a day"),
        ({"quiet": ("mon=25:00-07:00",)}, "quiet_hours"),
    ],
)
def test_bad_flags_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        update(**kwargs)
