"""The model base shared by every wire format: strict, immutable, and closed to unknown fields."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Strict, ValidationError


class WireModel(BaseModel):
    # Strict: "1" is not 1 and a missing field is an error, so producers learn of mistakes at the DLQ
    # rather than through a notification with odd content. Unknown fields are refused for the same reason.
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


E = TypeVar("E", bound=Enum)
# A member of an enumeration Herald writes, given as itself or by its value (strict models otherwise want the
# enum itself); any other value is refused.
Member = Annotated[E, Strict(False)]


def open_ended(schema: dict[str, Any]) -> None:
    """For a field's `json_schema_extra`: the JSON Schema lists the values this version writes, and admits any
    other string, because later versions may add values (consumers should tolerate one they do not know)."""
    choices = schema.pop("anyOf", None) or [{"$ref": schema.pop("$ref")}]
    schema["anyOf"] = [*choices, {"type": "string", "description": "a value added by a later version"}]


def describe_validation_error(exc: ValidationError) -> str:
    """The fields at fault, without echoing the input values (they may be personal data)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(document)"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems[:10])
