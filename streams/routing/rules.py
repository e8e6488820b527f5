"""Rule matching: which rule governs an event. Pure functions over `schemas.rules`, no transport."""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kernel.errors import NoRule
from schemas.rules import Condition, Operator, Rule, RuleSet

_MISSING = object()
# Event types whose matching rules are kept (RuleBook._by_type); past this the cache starts again.
_TYPES_CACHED = 4096


def _specificity(rule: Rule) -> tuple[int, int, int]:
    # An exact type beats any glob; among globs, more literal characters mean a narrower match; among
    # equals, a rule with more conditions is the narrower one.
    pattern = rule.match
    is_exact = not any(ch in pattern for ch in "*?[")
    literal = sum(1 for ch in pattern if ch not in "*?[]")
    return (1 if is_exact else 0, literal, len(rule.when))


def lookup(data: Mapping[str, Any], path: str) -> Any:
    """`data.order.total` or `order.total` → data["order"]["total"], or _MISSING."""
    current: Any = data
    for part in path.removeprefix("data.").split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def pick(data: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The fields at `paths` (as `lookup` reads them), nested as they are in `data`; missing ones left out:
    `["order.id", "url"]` → {"order": {"id": …}, "url": …}."""
    picked: dict[str, Any] = {}
    made = {id(picked)}  # the dicts built here, as opposed to values taken from `data`
    for path in _parents_first(tuple(paths)):
        value = lookup(data, path)
        if value is _MISSING:
            continue
        *parents, name = path.split(".")
        into = picked
        for part in parents:
            if part not in into:
                into[part] = {}
                made.add(id(into[part]))
            into = into[part]
            if id(into) not in made:
                break
        else:
            into[name] = value
    return picked


@functools.lru_cache(maxsize=1024)
def _parents_first(paths: tuple[str, ...]) -> tuple[str, ...]:
    # Parents first: a field picked whole already holds the fields below it. (Cached: a rule's paths are
    # the same for each of its notifications.)
    return tuple(sorted({p.removeprefix("data.") for p in paths}, key=lambda p: p.count(".")))


def holds(condition: Condition, data: Mapping[str, Any]) -> bool:
    """A condition on event data; a missing field or a comparison between unlike types is simply false."""
    value = lookup(data, condition.path)
    if condition.op is Operator.EXISTS:
        return (value is not _MISSING) == (condition.value is not False)
    if value is _MISSING:
        return False
    expected = condition.value
    try:
        match condition.op:
            case Operator.EQ:
                return bool(value == expected)
            case Operator.NE:
                return bool(value != expected)
            case Operator.GT:
                return bool(value > expected)
            case Operator.GTE:
                return bool(value >= expected)
            case Operator.LT:
                return bool(value < expected)
            case Operator.LTE:
                return bool(value <= expected)
            case Operator.IN:
                return isinstance(expected, list) and value in expected
    except TypeError:
        return False
    return False


@dataclass(frozen=True)
class RuleBook:
    rules: tuple[Rule, ...]
    # event type → the rules whose pattern matches it (`_by_type`)
    _types: dict[str, tuple[Rule, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # sorted() is stable: among rules of equal specificity the file's order decides.
        ordered = tuple(sorted(self.rules, key=_specificity, reverse=True))
        object.__setattr__(self, "rules", ordered)

    def match(self, event_type: str, data: Mapping[str, Any] | None = None) -> Rule:
        """The most specific rule for the event whose conditions hold; raises NoRule when none does."""
        for rule in self._by_type(event_type):
            if not rule.when or all(holds(c, data or {}) for c in rule.when):
                return rule
        raise NoRule(f"no routing rule matches event type {event_type!r}")

    def _by_type(self, event_type: str) -> tuple[Rule, ...]:
        """The rules whose pattern matches the type, in order: matched once per type, not per event (a
        pattern match per rule, twice per event, grew with the rules file)."""
        cache = self._types
        found = cache.get(event_type)
        if found is None:
            if len(cache) >= _TYPES_CACHED:  # event types come from producers: keep the cache bounded
                cache.clear()
            found = tuple(r for r in self.rules if fnmatch.fnmatchcase(event_type, r.match))
            cache[event_type] = found
        return found

    def to_ruleset(self) -> RuleSet:
        return RuleSet(rules=list(self.rules))

    @classmethod
    def from_yaml(cls, text: str) -> RuleBook:
        """Parse and validate a rules document; errors name the line, the rule and the field at fault."""
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML: {exc}") from None
        try:
            ruleset = RuleSet.model_validate(document, strict=False)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            line = _line_of(text, first["loc"])
            at = f"line {line}: " if line else ""
            raise ValueError(f"{at}{where}: {first['msg']}") from None
        return cls(tuple(ruleset.rules))

    @classmethod
    def from_json(cls, raw: bytes) -> RuleBook:
        return cls(tuple(RuleSet.model_validate_json(raw).rules))

    @classmethod
    def from_file(cls, path: Path) -> RuleBook:
        return cls.from_yaml(path.read_text(encoding="utf-8"))


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """The line in the YAML source where the rule at fault starts (rules.N → the N-th list item)."""
    if len(loc) < 2 or loc[0] != "rules" or not isinstance(loc[1], int):
        return None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if node is None or not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if key.value == "rules" and isinstance(value, yaml.SequenceNode) and loc[1] < len(value.value):
            item = value.value[loc[1]]
            if isinstance(item, yaml.MappingNode) and len(loc) > 2:
                for field_key, _ in item.value:
                    if field_key.value == loc[2]:
                        return int(field_key.start_mark.line) + 1
            return int(item.start_mark.line) + 1
    return None
