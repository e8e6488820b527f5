"""Rule matching: which rule governs an event type. Pure functions over `schemas.rules`, no transport."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from schemas.rules import Rule, RuleSet
from streams.errors import NoRule


def _specificity(pattern: str) -> tuple[int, int]:
    # An exact type beats any glob; among globs, more literal characters mean a narrower match.
    is_exact = not any(ch in pattern for ch in "*?[")
    literal = sum(1 for ch in pattern if ch not in "*?[]")
    return (1 if is_exact else 0, literal)


@dataclass(frozen=True)
class RuleBook:
    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.rules, key=lambda r: _specificity(r.match), reverse=True))
        object.__setattr__(self, "rules", ordered)

    def match(self, event_type: str) -> Rule:
        """The most specific rule for `event_type`; raises NoRule when none matches."""
        for rule in self.rules:
            if fnmatch.fnmatchcase(event_type, rule.match):
                return rule
        raise NoRule(f"no routing rule matches event type {event_type!r}")

    @classmethod
    def from_yaml(cls, text: str) -> RuleBook:
        """Parse and validate a rules document; errors name the rule index and field at fault."""
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML: {exc}") from None
        try:
            ruleset = RuleSet.model_validate(document, strict=False)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{where}: {first['msg']}") from None
        return cls(tuple(ruleset.rules))

    @classmethod
    def from_file(cls, path: Path) -> RuleBook:
        return cls.from_yaml(path.read_text(encoding="utf-8"))
