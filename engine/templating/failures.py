"""Running a compiled part under the output cap, and turning failures into a clear RenderError."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from typing import Any, cast

from jinja2 import Template
from jinja2.exceptions import (
    SecurityError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.exceptions import TemplateError as JinjaError

from engine.errors import RenderError

from .budget import Budget, RenderAborted

#: What a template can make Python raise; anything else is a bug of ours and propagates as is.
RENDER_FAILURES: tuple[type[BaseException], ...] = (
    RenderAborted,
    JinjaError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    RecursionError,
    MemoryError,
)
_MIN_SECRET_LEN = 3  # shorter values would redact ordinary words


def stream(template: Template, scope: Mapping[str, Any], max_chars: int, budget: Budget) -> str:
    """Render chunk by chunk and stop as soon as the output passes ``max_chars`` (not after).

    Raises:
        RenderAborted: the output cap or the time limit was reached.
    """
    chunks: list[str] = []
    size = 0
    generator = cast(Generator[str, None, None], template.generate(scope))
    try:
        for chunk in generator:
            size += len(chunk)
            if size > max_chars:
                raise RenderAborted("output_too_large", f"the output passed its {max_chars} character cap")
            budget.check_clock()
            chunks.append(chunk)
    finally:
        generator.close()
    return "".join(chunks)


def _describe(err: BaseException) -> tuple[str, str]:
    """(RenderError code, human message) for a failure."""
    if isinstance(err, RenderAborted):
        return err.code, err.message
    if isinstance(err, UndefinedError):
        hint = ""
        if "unsubscribe_url" in str(err):
            hint = " (unsubscribe_url needs the link secret, tenant and recipient in the render context)"
        return "undefined_variable", f"undefined variable: {err.message}{hint}"
    if isinstance(err, SecurityError):
        return "unsafe_template", f"refused by the template sandbox: {err}"
    if isinstance(err, TemplateSyntaxError):
        return "template_syntax", f"syntax error on line {err.lineno}: {err.message}"
    if isinstance(err, TemplateNotFound):
        return "template_syntax", f"partial {err.name!r} was not found"
    if isinstance(err, RecursionError):
        return "render_budget", "the template recursed too deeply"
    if isinstance(err, MemoryError):
        return "render_budget", "the template ran out of memory"
    if isinstance(err, JinjaError):
        return "render_error", str(err.message or err)
    return "render_error", f"{type(err).__name__}: {err}"


def redact(message: str, secrets: Iterable[str]) -> str:
    """Replace sensitive variable values (OTP codes, magic links) in an error message."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET_LEN:
            message = message.replace(secret, "[redacted]")
    return message


def render_failure(err: BaseException, where: str, secrets: Iterable[str]) -> RenderError:
    """A RenderError naming the part (``otp_login:v3/en-GB/body.html``) and what went wrong."""
    code, message = _describe(err)
    return RenderError(redact(f"{where}: {message}", secrets), code=code)
