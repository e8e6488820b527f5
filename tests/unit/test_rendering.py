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


# NUL, ESC (a terminal colour sequence), BEL, DEL, a C1 CSI, and the bidi overrides and isolates.
HOSTILE = "A\x00B\x1b[31mC\x07D\x7fE\x9bF\u202eG\u202aH\u2066I\u2067J\u2068K\u2069L"
CLEAN = "AB[31mCDEFGHIJKL"


def _all_channels(tmp_path: Path) -> TemplateStore:
    for channel, parts in {
        "inapp": ("title", "body", "action_url"),
        "email": ("subject", "text", "html"),
        "push": ("title", "body"),
        "sms": ("text",),
    }.items():
        for part in parts:
            write(tmp_path, f"c/{channel}/{part}.j2", "{{ data.value }}")
    return TemplateStore(tmp_path)


@pytest.mark.parametrize("channel", list(Channel))
def test_control_and_bidi_characters_from_event_data_are_stripped_from_every_part(
    tmp_path: Path, channel: Channel
) -> None:
    parts = _all_channels(tmp_path).render("c", channel, "en", {"data": {"value": HOSTILE}})
    assert parts.parts and all(text == CLEAN for text in parts.parts.values()), parts.parts


def test_one_line_parts_lose_line_breaks_and_bodies_keep_them(tmp_path: Path) -> None:
    store = _all_channels(tmp_path)
    value = "one\r\ntwo\tthree\rfour\u2028five\x0bsix"
    email = store.render("c", Channel.EMAIL, "en", {"data": {"value": value}})
    # A subject is one header line: a line break there would forge another header (or be refused by SMTP).
    assert email["subject"] == "one  two three four five six"
    assert email["text"] == "one\ntwo\tthree\nfour\nfive\nsix"
    inapp = store.render("c", Channel.INAPP, "en", {"data": {"value": value}})
    assert "\n" not in inapp["title"] and "\n" not in (inapp.get("action_url") or "")
    assert inapp["body"] == email["text"]
    push = store.render("c", Channel.PUSH, "en", {"data": {"value": value}})
    assert push["title"] == email["subject"] and push["body"] == email["text"]
    # An SMS keeps its line breaks but not tabs (not GSM-7: one would double the segments).
    assert store.render("c", Channel.SMS, "en", {"data": {"value": value}})["text"] == (
        "one\ntwo three\nfour\nfive\nsix"
    )


def test_ordinary_text_is_left_as_it_is(tmp_path: Path) -> None:
    text = "Crème brûlée — 12 € · 東京 · مرحبا · 👩‍💻 · a\u200db"  # accents, CJK, Arabic, emoji with ZWJ
    parts = _all_channels(tmp_path).render("c", Channel.EMAIL, "en", {"data": {"value": text}})
    assert parts["subject"] == parts["text"] == text
