from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from streams.routing.formatting import (
    babel_locale,
    context_filters,
    filters_for,
    format_currency,
    format_date,
    format_datetime,
    format_number,
)

# Sunday 2026-03-08 15:30 UTC: 11:30 in Montreal (EDT since that morning), 10:30 the day before (EST).
AFTERNOON = datetime(2026, 3, 8, 15, 30, tzinfo=UTC)


def plain(text: str) -> str:
    """CLDR separates with no-break and narrow no-break spaces; compare them as spaces."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en", "Mar 8, 2026, 11:30:00 AM"),
        ("fr-CA", "8 mars 2026, 11 h 30 min 00 s"),
        ("de", "08.03.2026, 11:30:00"),
    ],
)
def test_datetime_in_the_recipients_locale_and_timezone(locale: str, expected: str) -> None:
    assert plain(format_datetime(AFTERNOON, locale=locale, timezone="America/Montreal")) == expected


def test_datetime_follows_the_clock_change() -> None:
    day_before = datetime(2026, 3, 7, 15, 30, tzinfo=UTC)
    assert plain(format_datetime(day_before, locale="de", timezone="America/Montreal", format="short")) == (
        "07.03.26, 10:30"
    )
    assert plain(format_datetime(AFTERNOON, locale="de", timezone="America/Montreal", format="short")) == (
        "08.03.26, 11:30"
    )


def test_datetime_takes_an_iso_string_and_a_cldr_pattern() -> None:
    text = format_datetime(
        "2026-03-08T15:30:00+00:00", locale="fr-CA", timezone="Europe/Paris", format="EEEE d MMMM HH:mm"
    )
    assert text == "dimanche 8 mars 16:30"


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        format_datetime(datetime(2026, 3, 8, 15, 30), locale="en", timezone="UTC")
    with pytest.raises(ValueError, match="UTC offset"):
        format_datetime("2026-03-08T15:30:00", locale="en", timezone="UTC")


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("en", "March 9, 2026"), ("fr-CA", "9 mars 2026"), ("de", "9. März 2026")],
)
def test_date_is_the_recipients_local_date(locale: str, expected: str) -> None:
    # 15:30 UTC on the 8th is already the 9th in Chatham (+13:45).
    assert format_date(AFTERNOON, locale=locale, timezone="Pacific/Chatham", format="long") == expected


def test_a_calendar_date_is_not_shifted() -> None:
    assert format_date(date(2026, 3, 8), locale="de", timezone="Pacific/Chatham") == "08.03.2026"
    assert format_date("2026-03-08", locale="de", timezone="Pacific/Chatham") == "08.03.2026"


@pytest.mark.parametrize(
    ("locale", "number", "expected"),
    [
        ("en", 1234567.891, "1,234,567.891"),
        ("fr-CA", 1234567.891, "1 234 567,891"),
        ("de", 1234567.891, "1.234.567,891"),
        ("de", 42, "42"),
        ("de", "0.1", "0,1"),
        ("en", Decimal("-3.5"), "-3.5"),
    ],
)
def test_number(locale: str, number: float | int | str | Decimal, expected: str) -> None:
    assert plain(format_number(number, locale=locale)) == expected


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("en", "€1,234.50"), ("fr-CA", "1 234,50 €"), ("de", "1.234,50 €")],
)
def test_currency(locale: str, expected: str) -> None:
    assert plain(format_currency(1234.5, "EUR", locale=locale)) == expected


def test_currency_in_canadian_dollars_reads_differently_in_canada() -> None:
    assert plain(format_currency(10, "CAD", locale="en")) == "CA$10.00"
    assert plain(format_currency(10, "CAD", locale="fr-CA")) == "10,00 $"


@pytest.mark.parametrize("value", [True, "ten", float("nan"), float("inf"), None, [1]])
def test_what_is_not_a_number_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="number"):
        format_number(value, locale="en")  # type: ignore[arg-type]


def test_a_bad_currency_code_is_refused() -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        format_currency(1, "euro", locale="en")


def test_unknown_locales_fall_back_to_the_language_then_english() -> None:
    assert str(babel_locale("fr-CA")) == "fr_CA"
    assert str(babel_locale("fr_CA")) == "fr_CA"
    assert babel_locale("fr-ZZ").language == "fr"
    assert str(babel_locale("zz")) == "en"


def _render(source: str, filters: Mapping[str, Callable[..., str]], **context: object) -> str:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    env.filters.update(filters)
    return env.from_string(source).render(context)


def test_filters_bound_to_a_recipient_work_in_the_sandbox() -> None:
    source = (
        "{{ at | datetime('short') }} / {{ at | date }} / {{ n | number }} / {{ total | currency('EUR') }}"
    )
    text = _render(source, filters_for("de", "Europe/Berlin"), at=AFTERNOON, n=1234.5, total="19.9")
    assert plain(text) == "08.03.26, 16:30 / 08.03.2026 / 1.234,5 / 19,90 €"


def test_context_filters_read_the_recipient_from_the_render_context() -> None:
    source = "{{ data.shipped_at | datetime('short') }}"
    context = {"data": {"shipped_at": "2026-03-08T15:30:00Z"}}
    bob = {"locale": "fr-CA", "timezone": "America/Montreal"}
    assert plain(_render(source, context_filters(), recipient=bob, **context)) == "2026-03-08 11 h 30"
    alice = {"locale": "en", "timezone": "Europe/London"}
    assert plain(_render(source, context_filters(), recipient=alice, **context)) == "3/8/26, 3:30 PM"
    assert plain(_render(source, context_filters(), **context)) == "3/8/26, 3:30 PM"  # en, UTC by default


def test_a_filter_failure_is_a_template_error() -> None:
    with pytest.raises(jinja2.TemplateRuntimeError, match=r"datetime filter: .*UTC offset"):
        _render("{{ '2026-03-08T15:30' | datetime }}", filters_for("en", "UTC"))
    with pytest.raises(jinja2.TemplateRuntimeError, match="number filter"):
        _render("{{ 'x' | number }}", context_filters(), recipient={"locale": "en", "timezone": "UTC"})


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("{{ v | number }}", "ada.lovelace@example.com"),
        ("{{ v | currency('EUR') }}", "+33 6 12 00 00 01"),
        ("{{ v | number }}", "Infinity"),
        ("{{ v | datetime }}", "ada.lovelace@example.com"),
    ],
)
def test_a_filter_failure_never_repeats_the_value(source: str, value: str) -> None:
    # The message becomes a dead letter's detail; the value is event data, which may be personal.
    with pytest.raises(jinja2.TemplateRuntimeError) as caught:
        _render(source, context_filters(), v=value, recipient={"locale": "en", "timezone": "UTC"})
    assert value not in str(caught.value) and "filter" in str(caught.value)
