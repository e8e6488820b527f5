"""Dates, numbers and money formatted for the recipient's locale and timezone (Babel), as Jinja filters.

Event data arrives as JSON, so the date filters also take ISO 8601 strings. A value a filter cannot format
is an error (a `TemplateRuntimeError` inside templates, so rendering reports the template at fault).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from functools import lru_cache, wraps
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from babel import numbers as babel_numbers

DEFAULT_LOCALE = "en"
DEFAULT_TIMEZONE = "UTC"

Number = int | float | Decimal | str
Filter = Callable[..., str]


@lru_cache(maxsize=256)
def babel_locale(tag: str) -> Locale:
    """`fr-CA` → Babel's fr_CA; an unknown tag falls back along `fr-CA` → `fr` → English."""
    parts = tag.replace("_", "-").split("-")
    for candidate in ("-".join(parts[:i]) for i in range(len(parts), 0, -1)):
        try:
            return Locale.parse(candidate, sep="-")
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse(DEFAULT_LOCALE)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None


def _aware(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            # Never the value: it is event data, and this message ends up in a dead letter's detail.
            raise ValueError("a string that is not an ISO 8601 date-time") from None
    if value.tzinfo is None or value.utcoffset() is None:
        # Whose clock a naive time was read on is unknown, so any instant we picked could be hours off.
        raise ValueError("a date-time without a UTC offset cannot be shown in the recipient's timezone")
    return value


def format_datetime(value: dt.datetime | str, *, locale: str, timezone: str, format: str = "medium") -> str:
    """An aware date-time (or ISO 8601 string with an offset) in the recipient's timezone and locale.
    `format` is short, medium, long, full or a CLDR pattern such as `EEEE d MMMM HH:mm`."""
    return babel_dates.format_datetime(
        _aware(value), format, tzinfo=_zone(timezone), locale=babel_locale(locale)
    )


def format_date(
    value: dt.date | dt.datetime | str, *, locale: str, timezone: str, format: str = "medium"
) -> str:
    """A calendar date as is, or the recipient's local date of an aware date-time."""
    day: dt.date
    if isinstance(value, dt.datetime):
        day = _aware(value).astimezone(_zone(timezone)).date()
    elif isinstance(value, dt.date):
        day = value
    else:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            day = _aware(value).astimezone(_zone(timezone)).date()
    return babel_dates.format_date(day, format, locale=babel_locale(locale))


def _number(value: Number) -> int | Decimal:
    # bool is an int to Python but never a quantity; floats go through str so 0.1 stays 0.1.
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int):
        return value
    try:
        number = Decimal(str(value).strip()) if isinstance(value, (float, str)) else value
    except InvalidOperation:
        raise ValueError(f"a {type(value).__name__} that is not a number") from None
    if not isinstance(number, Decimal) or not number.is_finite():
        raise ValueError(f"a {type(value).__name__} that is not a finite number")
    return number


def format_number(value: Number, *, locale: str) -> str:
    return babel_numbers.format_decimal(_number(value), locale=babel_locale(locale))


def format_currency(value: Number, currency: str, *, locale: str) -> str:
    """An amount in `currency` (ISO 4217, e.g. EUR) written the locale's way: `1.234,50 €` in de."""
    if not (len(currency) == 3 and currency.isalpha()):
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code")
    return babel_numbers.format_currency(_number(value), currency.upper(), locale=babel_locale(locale))


def _as_filter(function: Callable[..., str], name: str) -> Filter:
    @wraps(function)
    def run(*args: Any, **kwargs: Any) -> str:
        try:
            return function(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            raise jinja2.TemplateRuntimeError(f"{name} filter: {exc}") from exc

    return run


def filters_for(locale: str, timezone: str) -> dict[str, Filter]:
    """The filters bound to one recipient: `{{ data.shipped_at | datetime('short') }}`, `| date`,
    `| number`, `| currency('EUR')`."""

    def datetime_filter(value: dt.datetime | str, format: str = "medium") -> str:
        return format_datetime(value, locale=locale, timezone=timezone, format=format)

    def date_filter(value: dt.date | dt.datetime | str, format: str = "medium") -> str:
        return format_date(value, locale=locale, timezone=timezone, format=format)

    def number_filter(value: Number) -> str:
        return format_number(value, locale=locale)

    def currency_filter(value: Number, currency: str) -> str:
        return format_currency(value, currency, locale=locale)

    return {
        "datetime": _as_filter(datetime_filter, "datetime"),
        "date": _as_filter(date_filter, "date"),
        "number": _as_filter(number_filter, "number"),
        "currency": _as_filter(currency_filter, "currency"),
    }


def _recipient_of(recipient: object) -> tuple[str, str]:
    if not isinstance(recipient, Mapping):
        return DEFAULT_LOCALE, DEFAULT_TIMEZONE
    locale = recipient.get("locale")
    timezone = recipient.get("timezone")
    return (
        locale if isinstance(locale, str) else DEFAULT_LOCALE,
        timezone if isinstance(timezone, str) else DEFAULT_TIMEZONE,
    )


def context_filters() -> dict[str, Filter]:
    """The same filters, reading the locale and timezone from the render context's `recipient` (as
    `planning.template_context` provides it), so one shared environment serves every recipient."""

    def bind(name: str) -> Filter:
        @jinja2.pass_context
        def run(context: jinja2.runtime.Context, *args: Any, **kwargs: Any) -> str:
            locale, timezone = _recipient_of(context.get("recipient"))
            return filters_for(locale, timezone)[name](*args, **kwargs)

        return run

    return {name: bind(name) for name in ("datetime", "date", "number", "currency")}
