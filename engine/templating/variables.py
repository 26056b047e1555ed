"""Declared variable types and how request values are checked against them.

The policy is strict but useful: a value is accepted when it converts to the declared type without
loss or guessing, and everything else is an error that names the expected type.

============  ======================================================  =====================================
type          accepted                                                refused (examples)
============  ======================================================  =====================================
``str``       strings                                                 numbers (``384921`` would lose a
                                                                      leading zero of ``"084921"``)
``int``       ints, canonical integer strings (``"5"``)               ``True``, ``5.0``, ``"5.5"``, ``"five"``
``float``     ints, floats, numeric strings (``"2.5"``)               ``True``, NaN, infinity
``bool``      ``true`` / ``false``                                    ``"true"``, ``1``
``url``       absolute ``http(s)://host...`` without whitespace       ``javascript:...``, ``/relative``
``email``     ``local@domain``                                        anything without ``@`` and a dot
``date``      ISO dates ``2025-10-29`` (or a ``date``)                datetimes, other formats
``datetime``  ISO datetimes with an offset (``...T20:45:00Z``)        naive datetimes (whose clock?)
``money``     ``{"amount": "12.50" | 12.5, "currency": "GBP"}``       bare numbers (which currency?)
``list``      JSON arrays                                             strings
``dict``      JSON objects                                            strings
============  ======================================================  =====================================

Converted values (``date``, ``datetime``, :class:`Money`) are what templates see, so ``format_date``
and friends work on them directly. Variables the manifest does not declare are warnings, not errors:
the template cannot use them (it is rendered with strict undefined), so they are merely ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import is_currency


class VariableTypeError(ValueError):
    """A value does not fit its declared type; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in a currency (ISO 4217 code); ``format_currency`` needs nothing else."""

    amount: Decimal
    currency: str

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


@dataclass(frozen=True, slots=True)
class VariableProblem:
    """One finding about the variables of a request. Errors block the send; warnings do not."""

    name: str
    message: str
    warning: bool = False

    @property
    def is_error(self) -> bool:
        return not self.warning


@dataclass(frozen=True, slots=True)
class VariableCheck:
    """The outcome of checking variables: converted values with defaults applied, and the problems."""

    values: Mapping[str, Any]
    problems: tuple[VariableProblem, ...]

    @property
    def errors(self) -> tuple[VariableProblem, ...]:
        return tuple(p for p in self.problems if p.is_error)

    @property
    def warnings(self) -> tuple[VariableProblem, ...]:
        return tuple(p for p in self.problems if p.warning)


_INT = re.compile(r"^[+-]?[0-9]{1,18}$")
_URL = re.compile(r"^https?://[^\s/?#@]+(?:[/?#]\S*)?$", re.IGNORECASE)
_EMAIL = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise VariableTypeError('must be a string (send "084921", not 84921: numbers lose leading zeros)')
    raise VariableTypeError(f"must be a string, got {_kind(value)}")


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT.match(value.strip()):
        return int(value)
    raise VariableTypeError(f"must be a whole number, got {_kind(value)}")


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise VariableTypeError("must be a number, got a boolean")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise VariableTypeError("must be a number, got a string that is not one") from None
    else:
        raise VariableTypeError(f"must be a number, got {_kind(value)}")
    if not math.isfinite(number):
        raise VariableTypeError("must be a finite number")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise VariableTypeError(f"must be true or false, got {_kind(value)}")


def _url(value: Any) -> str:
    if isinstance(value, str) and _URL.match(value):
        return value
    raise VariableTypeError("must be an absolute http(s) URL")


def _email(value: Any) -> str:
    if isinstance(value, str) and _EMAIL.match(value):
        return value
    raise VariableTypeError("must be an email address")


def _date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise VariableTypeError("must be an ISO date such as 2025-10-29")


def _datetime(value: Any) -> datetime:
    parsed: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str) and "T" in value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None:
        raise VariableTypeError("must be an ISO datetime such as 2025-10-29T20:45:00Z")
    if parsed.tzinfo is None:
        raise VariableTypeError("needs a UTC offset (2025-10-29T20:45:00Z or +01:00)")
    return parsed


def _money(value: Any) -> Money:
    if isinstance(value, Money):
        return value
    if not isinstance(value, Mapping) or set(value) != {"amount", "currency"}:
        raise VariableTypeError('must be {"amount": "12.50", "currency": "GBP"}')
    amount, currency = value["amount"], value["currency"]
    if isinstance(amount, bool) or not isinstance(amount, int | float | str):
        raise VariableTypeError("amount must be a number or a decimal string")
    try:
        decimal = Decimal(str(amount))
    except InvalidOperation:
        raise VariableTypeError("amount is not a number") from None
    if not decimal.is_finite():
        raise VariableTypeError("amount must be finite")
    if not isinstance(currency, str) or not is_currency(currency):
        raise VariableTypeError("currency must be an ISO 4217 code such as GBP")
    return Money(decimal, currency)


def _list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    raise VariableTypeError(f"must be a list, got {_kind(value)}")


def _dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise VariableTypeError(f"must be an object, got {_kind(value)}")


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}
    return names.get(type(value), f"a {type(value).__name__}")


#: Declared type -> converter (raises VariableTypeError).
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": _str,
    "int": _int,
    "float": _float,
    "bool": _bool,
    "url": _url,
    "email": _email,
    "date": _date,
    "datetime": _datetime,
    "money": _money,
    "list": _list,
    "dict": _dict,
}


def convert(kind: str, value: Any) -> Any:
    """The value as its declared type.

    Raises:
        VariableTypeError: it does not fit; the message says what was expected.
    """
    return CONVERTERS[kind](value)
