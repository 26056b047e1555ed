"""The filters and helpers templates may use: a vetted subset of Jinja's, Babel formatting, ``link()``.

Every filter is wrapped so that numeric arguments stay small and results stay bounded, and the few
whose output can grow much faster than their input (``replace``, ``join``, ``indent``, ``wordwrap``)
check the size they would produce before producing it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from babel import Locale
from babel.dates import format_date as babel_format_date
from babel.dates import format_datetime as babel_format_datetime
from babel.dates import get_timezone
from babel.numbers import format_currency as babel_format_currency
from babel.numbers import format_decimal
from jinja2 import filters as jinja_filters
from jinja2 import pass_context, pass_environment, pass_eval_context
from jinja2.exceptions import SecurityError, TemplateRuntimeError
from jinja2.runtime import Context

from .budget import current_state
from .links import click_url, sign_link
from .variables import Money

#: Longest string or list a template expression may produce.
MAX_VALUE_CHARS = 262_144
#: The largest integer a template computes (about 1,200 digits).
MAX_INT_BITS = 4096
#: Largest number a filter or call argument may be (widths, counts, precisions).
MAX_INT_ARG = 10_000

#: Jinja filters templates keep. Left out: format (%-formatting tricks), pprint (object internals),
#: random (renders must be reproducible), urlize (output grows with attacker-chosen attributes).
ALLOWED_JINJA_FILTERS = frozenset(
    {
        "abs",
        "attr",
        "batch",
        "capitalize",
        "center",
        "count",
        "d",
        "default",
        "dictsort",
        "e",
        "escape",
        "filesizeformat",
        "first",
        "float",
        "forceescape",
        "groupby",
        "indent",
        "int",
        "items",
        "join",
        "last",
        "length",
        "list",
        "lower",
        "map",
        "max",
        "min",
        "reject",
        "rejectattr",
        "replace",
        "reverse",
        "round",
        "safe",
        "select",
        "selectattr",
        "slice",
        "sort",
        "string",
        "striptags",
        "sum",
        "title",
        "tojson",
        "trim",
        "truncate",
        "unique",
        "upper",
        "urlencode",
        "wordcount",
        "wordwrap",
        "xmlattr",
    }
)
_HTTP_URL = re.compile(r"^https?://[^\s/?#@]+(?:[/?#]\S*)?$", re.IGNORECASE)


def check_size(value: Any) -> None:
    if isinstance(value, str | list | tuple) and len(value) > MAX_VALUE_CHARS:
        raise SecurityError(f"a template value grew past {MAX_VALUE_CHARS} characters")
    # A number squared again and again doubles its digits each time: a dozen steps of a render's budget
    # and a single multiplication ran for minutes on the event loop, where the time limit cannot stop it.
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"a template number grew past {MAX_INT_BITS} bits")


def check_args(args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_INT_ARG:
            raise SecurityError(f"argument {arg} is too large for a template (limit {MAX_INT_ARG})")
        check_size(arg)


def _bounded(func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 2 if getattr(func, "jinja_pass_arg", None) is not None else 1

    @functools.wraps(func)  # copies jinja_pass_arg too, so Jinja still passes the context
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_args(args[skip:])
        check_args(kwargs.values())
        result = func(*args, **kwargs)
        check_size(result)
        return result

    return wrapper


def _grows_to(estimate: int) -> None:
    if estimate > MAX_VALUE_CHARS:
        raise SecurityError(f"this would produce about {estimate} characters (limit {MAX_VALUE_CHARS})")


@pass_eval_context
def _replace(eval_ctx: Any, s: Any, old: str, new: str, count: int | None = None) -> str:
    text, old_s, new_s = str(s), str(old), str(new)
    hits = text.count(old_s) if old_s else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    _grows_to(len(text) + hits * max(0, len(new_s) - len(old_s)))
    result: str = jinja_filters.do_replace(eval_ctx, s, old, new, count)  # Markup stays Markup
    return result


@pass_eval_context
def _join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    items = list(value)
    _grows_to(len(str(d)) * max(0, len(items) - 1) + sum(len(x) for x in items if isinstance(x, str)))
    result: str = jinja_filters.do_join(eval_ctx, items, d, attribute)
    return result


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    step = len(width) if isinstance(width, str) else int(width)
    _grows_to(len(str(s)) + (str(s).count("\n") + 1) * step)
    return jinja_filters.do_indent(s, width, first, blank)


@pass_environment
def _wordwrap(
    environment: Any,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    breaks = len(str(s)) // max(1, int(width)) + str(s).count("\n") + 1
    _grows_to(len(str(s)) + breaks * len(wrapstring or "\n"))
    return jinja_filters.do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0) -> Any:
    # Summing lists (start=[]) copies quadratically, in one uninterruptible call.
    if isinstance(start, bool) or not isinstance(start, int | float | Decimal):
        raise SecurityError("sum() adds numbers only")
    return jinja_filters.do_sum(environment, iterable, attribute, start)


_OVERRIDES: dict[str, Callable[..., Any]] = {
    "replace": _replace,
    "join": _join,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "sum": _sum,
}


def safe_filters() -> dict[str, Callable[..., Any]]:
    """The vetted Jinja filters, bounded."""
    chosen = {name: _OVERRIDES.get(name, jinja_filters.FILTERS[name]) for name in ALLOWED_JINJA_FILTERS}
    return {name: _bounded(func) for name, func in chosen.items()}


# -- Babel ------------------------------------------------------------------------------------------------


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise TypeError(f"expected a date or datetime, got {type(value).__name__}")


def _zone(tz: str | None) -> Any:
    state = current_state()
    return get_timezone(tz or (state.context.timezone if state else "UTC"))


def babel_filters(locale: Locale) -> dict[str, Callable[..., Any]]:
    """``format_date``, ``format_datetime``, ``format_number``, ``format_currency`` in ``locale``."""

    # pass_context (the context is unused) keeps Jinja from folding a call on a literal into a constant
    # at compile time: the timezone comes from the render, not the compile.
    @pass_context
    def format_date(context: Context, value: Any, format: str = "medium", tz: str | None = None) -> str:
        if isinstance(value, date) and not isinstance(value, datetime):
            return babel_format_date(value, format=format, locale=locale)
        moment = _as_datetime(value).astimezone(_zone(tz))
        return babel_format_date(moment.date(), format=format, locale=locale)

    @pass_context
    def format_datetime(context: Context, value: Any, format: str = "medium", tz: str | None = None) -> str:
        return babel_format_datetime(_as_datetime(value), format=format, tzinfo=_zone(tz), locale=locale)

    def format_number(value: Any, format: str | None = None) -> str:
        return format_decimal(_number(value), format=format, locale=locale)

    def format_currency(value: Any, currency: str | None = None, format: str | None = None) -> str:
        if isinstance(value, Money):
            value, currency = value.amount, currency or value.currency
        if not currency:
            raise TypeError("format_currency needs a currency: pass a money variable or a code like 'GBP'")
        return babel_format_currency(_number(value), currency, format=format, locale=locale)

    return {f.__name__: _bounded(f) for f in (format_date, format_datetime, format_number, format_currency)}


def _number(value: Any) -> Decimal | int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if not isinstance(value, str):
        return value
    try:
        return Decimal(value)
    except InvalidOperation:
        raise TypeError(f"expected a number, got the text {value!r}") from None


# -- helpers ---------------------------------------------------------------------------------------------


def link(url: Any) -> str:
    """``{{ link('https://...') }}``: a signed click redirect when tracking is on, else the URL itself."""
    if not isinstance(url, str) or not _HTTP_URL.match(url):
        raise TemplateRuntimeError("link() needs an absolute http(s) URL")
    state = current_state()
    if state is None:
        return url
    made = state.made.get(url)
    if made is not None:
        return made  # the same URL in the HTML and the text part: one index, one signature
    index = state.links.setdefault(url, len(state.links))
    ctx = state.context
    out = url
    if ctx.tracking and ctx.link_secret and ctx.tenant and ctx.message_id:
        out = click_url(ctx.base_url, sign_link(ctx.link_secret, ctx.tenant, ctx.message_id, url, index=index))
    elif ctx.tracking:
        state.notes.append(f"tracking is on but the link secret, tenant or message id is missing: {url} is not tracked")
    state.made[url] = out
    return out
