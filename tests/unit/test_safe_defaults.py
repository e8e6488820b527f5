"""Safe defaults no setting can undo: no unsafe deserialiser anywhere in Herald (pickle and its kin, YAML's
full loader), raw Faust codecs on every topic, and Faust's own web server, which would serve table contents
(personal data) at /table, never started, even by `herald worker`'s default `--with-web`."""

from __future__ import annotations

import ast
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from kernel.settings import Settings
from streams.app import create_app
from streams.runtime.tables import declare_tables
from streams.runtime.topics import declare_topics

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "kernel", "adapters", "gateway", "streams")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def _sources() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def test_no_module_imports_an_unsafe_deserialiser_or_loads_yaml_unsafely() -> None:
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                names = [f"yaml.{node.attr}"] if node.value.id == "yaml" and node.attr in UNSAFE_YAML else []
            else:
                continue
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names if name in UNSAFE_MODULES
            ]
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names if name.startswith("yaml.")
            ]
    assert found == []


def _channels(value: Any) -> list[Any]:
    """Every topic (anything with codecs) in a nest of dataclasses, dicts and tuples."""
    if hasattr(value, "key_serializer"):
        return [value]
    if is_dataclass(value) and not isinstance(value, type):
        value = {field.name: getattr(value, field.name) for field in fields(value)}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [topic for item in value for topic in _channels(item)]
    return []


def test_every_topic_and_table_of_the_worker_decodes_without_pickle() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    app = create_app(settings)
    assert (app.conf.key_serializer, app.conf.value_serializer) == ("raw", "raw")
    topics = _channels(declare_topics(app, settings))
    declare_tables(app, settings)
    tables = list(app.tables.values())
    assert len(topics) > 10 and len(tables) >= 5
    # Topics carry bytes Herald decodes with pydantic; tables' values are JSON. Faust's `pickle` codec: never.
    assert {(t.key_serializer, t.value_serializer) for t in topics} == {("raw", "raw")}
    codecs = {c for t in tables for c in (t.key_serializer, t.value_serializer)}
    codecs |= {
        c for t in tables for c in (t.changelog_topic.key_serializer, t.changelog_topic.value_serializer)
    }
    assert codecs <= {"raw", "json"}, codecs


def test_fausts_web_server_is_never_started_even_when_the_worker_command_enables_it() -> None:
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    app.conf.web_enabled = True  # what `herald worker` does by default (`--with-web`)
    assert list(app.boot_strategy.web_server()) == []
