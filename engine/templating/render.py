"""Sandboxed Jinja2 rendering: strict about undefined names, autoescaping HTML parts only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, UndefinedError
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from engine.errors import RenderError


@dataclass(frozen=True, slots=True)
class RenderContext:
    """What a render knows beyond the variables: whose message it is and how links are made."""

    tenant: str | None = None
    message_id: str | None = None
    tracking: bool = False
    base_url: str = "http://127.0.0.1:8000"
    link_secret: str = ""


def make_environment(partial_dirs: list[Path], *, html: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader([str(p) for p in partial_dirs]),
        undefined=StrictUndefined,
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    return env


def describe(err: Exception) -> str:
    if isinstance(err, UndefinedError):
        return f"undefined variable: {err.message}"
    if isinstance(err, SecurityError):
        return f"unsafe template construct refused: {err}"
    return f"{type(err).__name__}: {err}"


RENDER_FAILURES = (JinjaTemplateError, SecurityError, TypeError, ValueError, ArithmeticError, LookupError)


def fail(err: Exception, where: str) -> RenderError:
    return RenderError(f"{where}: {describe(err)}", code="render_error")


class _TextFromHtml(HTMLParser):
    """HTML -> readable plain text: paragraphs and breaks become newlines, links become 'text (url)'."""

    _BLOCK = frozenset({"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "li", "table", "section", "footer"})
    _SKIP = frozenset({"style", "script", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._href: list[str | None] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in self._BLOCK:
            self.out.append("\n\n")
        elif tag == "a":
            self._href.append(dict(attrs).get("href"))
        elif tag == "li":
            self.out.append("\n- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK:
            self.out.append("\n\n")
        elif tag == "a" and self._href:
            href = self._href.pop()
            if href and not href.startswith("mailto:"):
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _TextFromHtml()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
