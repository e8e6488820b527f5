from __future__ import annotations

from pathlib import Path

import pytest

from kernel.errors import TemplateFailure
from schemas.channels import Channel
from streams.routing.rendering import TemplateStore, locale_chain


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def store(tmp_path: Path) -> TemplateStore:
    write(tmp_path, "t/inapp/title.j2", "Hi {{ data.name }}")
    write(tmp_path, "t/inapp/title.fr.j2", "Salut {{ data.name }}")
    write(tmp_path, "t/inapp/body.j2", "{{ data.n }} new")
    write(tmp_path, "t/email/subject.j2", "S {{ data.name }}")
    write(tmp_path, "t/email/text.j2", "T {{ data.name }}")
    write(tmp_path, "t/email/html.j2", "<b>{{ data.name }}</b>")
    return TemplateStore(tmp_path)


def test_locale_chain() -> None:
    assert locale_chain("fr-CA") == ["fr-CA", "fr", ""]
    assert locale_chain("zh_Hant_TW") == ["zh-Hant-TW", "zh-Hant", "zh", ""]
    assert locale_chain("en") == ["en", ""]


def test_renders_default_and_falls_back_by_locale(store: TemplateStore) -> None:
    ctx = {"data": {"name": "Ann", "n": 3}}
    assert store.render("t", Channel.INAPP, "en", ctx)["title"] == "Hi Ann"
    assert store.render("t", Channel.INAPP, "fr-CA", ctx)["title"] == "Salut Ann"
    # body has no French variant: the default is used
    assert store.render("t", Channel.INAPP, "fr-CA", ctx)["body"] == "3 new"


def test_html_part_is_escaped_text_is_not(store: TemplateStore) -> None:
    parts = store.render("t", Channel.EMAIL, "en", {"data": {"name": "<script>x</script>"}})
    assert parts["html"] == "<b>&lt;script&gt;x&lt;/script&gt;</b>"
    assert parts["text"] == "T <script>x</script>"


def test_missing_variable_is_a_template_failure(store: TemplateStore) -> None:
    with pytest.raises(TemplateFailure, match="name"):
        store.render("t", Channel.INAPP, "en", {"data": {}})


def test_missing_template_is_a_template_failure(store: TemplateStore) -> None:
    with pytest.raises(TemplateFailure, match="nope"):
        store.render("nope", Channel.INAPP, "en", {"data": {}})
    assert store.missing_parts("nope", Channel.SMS) == ["text"]
    assert store.missing_parts("t", Channel.EMAIL) == []


def test_event_data_is_never_template_source(store: TemplateStore) -> None:
    parts = store.render("t", Channel.INAPP, "en", {"data": {"name": "{{ 7*7 }}", "n": 1}})
    assert parts["title"] == "Hi {{ 7*7 }}"


def test_sandbox_refuses_internals(tmp_path: Path) -> None:
    write(tmp_path, "evil/sms/text.j2", "{{ data.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateFailure):
        TemplateStore(tmp_path).render("evil", Channel.SMS, "en", {"data": {}})
