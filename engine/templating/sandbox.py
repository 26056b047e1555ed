"""The Jinja2 sandbox Herald renders tenants' templates in.

On top of Jinja's immutable sandbox:

- compile time: attribute access to ``_names``, ``format``/``format_map``/``mro``, ``|attr('_...')`` and the
  names ``self``, ``cycler``, ``joiner``, ``namespace``, ``lipsum`` are refused with the line number;
  every ``{% for %}`` iterable and every ``~`` concatenation is wrapped in a guard;
- run time: an unsafe attribute raises at once (Jinja's default returns an undefined that only fails
  when printed), strings expose a read-only allowlist of methods, ``str.format`` is gone, ``%`` on
  strings is refused, ``*``, ``**`` and ``+`` check the size of what they would build (strings, lists
  and integers), every call spends a budget step and has its arguments and result size-checked, and
  loops spend a step per iteration.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from babel import Locale
from jinja2 import BaseLoader, StrictUndefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .budget import current_state, guard_loop, guarded_range
from .filters import MAX_INT_BITS, MAX_VALUE_CHARS, babel_filters, check_args, check_size, link, safe_filters

#: Attributes refused on any object (besides every name starting with "_").
BLOCKED_ATTRIBUTES = frozenset({"format", "format_map", "mro", "gi_frame", "gi_code", "f_globals", "f_locals"})
#: Names that are not available in templates (Jinja's default globals carry ways out of the sandbox).
FORBIDDEN_NAMES = frozenset({"self", "cycler", "joiner", "namespace", "lipsum", "config", "request"})
#: Read-only string methods templates may call; the rest (join, center, replace, expandtabs...) can
#: build huge strings in one uninterruptible call and have bounded filter equivalents.
STR_METHODS = frozenset(
    {
        "upper",
        "lower",
        "title",
        "capitalize",
        "casefold",
        "swapcase",
        "strip",
        "lstrip",
        "rstrip",
        "startswith",
        "endswith",
        "split",
        "rsplit",
        "splitlines",
        "count",
        "find",
        "rfind",
        "index",
        "rindex",
        "partition",
        "rpartition",
        "removeprefix",
        "removesuffix",
        "isdigit",
        "isalpha",
        "isalnum",
        "isspace",
        "islower",
        "isupper",
        "isnumeric",
        "isdecimal",
        "istitle",
    }
)
_GUARD_LOOP = "herald_guard_loop"
_GUARD_SIZE = "herald_guard_size"


def _unsafe_name(name: str) -> bool:
    return name.startswith("_") or name in BLOCKED_ATTRIBUTES


def _const_str(node: nodes.Node | None) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def check_tree(tree: nodes.Template) -> None:
    """Refuse the constructs SSTI payloads are made of, before any code runs.

    Raises:
        SecurityError: naming the construct and its line.
    """
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name, nodes.Filter)):
        bad: str | None = None
        if isinstance(node, nodes.Getattr) and _unsafe_name(node.attr):
            bad = f"attribute {node.attr!r}"
        elif isinstance(node, nodes.Getitem) and (key := _const_str(node.arg)) and _unsafe_name(key):
            bad = f"item {key!r}"
        elif isinstance(node, nodes.Name) and node.name in FORBIDDEN_NAMES:
            bad = f"name {node.name!r}"
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            key = _const_str(node.args[0])
            bad = f"attribute {key!r}" if key is not None and _unsafe_name(key) else None
        if bad:
            raise SecurityError(f"{bad} is not allowed in templates (line {node.lineno})")


class _Guards(NodeTransformer):
    """Wraps loop iterables and ``~`` concatenations in guard filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _GUARD_LOOP, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, _GUARD_SIZE, [], [], None, None, lineno=node.lineno)


class HeraldSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, hardened as the module docstring lists."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr in BLOCKED_ATTRIBUTES:
            return False
        if isinstance(obj, str) and callable(value) and attr not in STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        # A flat copy, not Jinja's ChainMap over the environment's: every render and include builds its
        # context from these, and iterating a ChainMap cost more than the rest of the context. The
        # environment's globals are set once, before any template is loaded (make_environment).
        return {**self.globals, **(d or {})}

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        return None  # str.format / format_map are refused outright (is_safe_attribute), not sandboxed

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to {type(obj).__name__}.{attribute} is not allowed in templates")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("%-formatting of strings is not available in templates; use filters")
        if operator == "**" and _power_too_large(left, right):
            raise SecurityError(f"{left} ** {right} is too large for a template")
        if operator == "*":
            _check_repeat(left, right)
        result = self.binop_table[operator](left, right)
        check_size(result)
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        state = current_state()
        if state is not None:
            state.budget.step()
        if __obj is not guarded_range:  # range is lazy and budgeted: a large stop costs nothing up front
            check_args(args)
            check_args(kwargs.values())
        result = super().call(__context, __obj, *args, **kwargs)
        check_size(result)
        return result

    def compile(
        self,
        source: str | nodes.Template,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> Any:
        # Every template, includes too, passes here: check, then guard, then generate code.
        tree = self.parse(source, name, filename) if isinstance(source, str) else source
        check_tree(tree)
        guarded = _Guards().visit(tree)
        if raw:
            return super().compile(guarded, name, filename, True, defer_init)
        return super().compile(guarded, name, filename, False, defer_init)


def _power_too_large(base: Any, exponent: Any) -> bool:
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0:
        return False
    return max(1, abs(base).bit_length()) * exponent > MAX_INT_BITS


def _check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_VALUE_CHARS:
            raise SecurityError(f"repeating a value {times} times is too large for a template")


def make_environment(loader: BaseLoader, *, locale: str, html: bool) -> HeraldSandbox:
    """A sandbox for one (owner, locale, part kind): HTML parts autoescape, text parts do not."""
    env = HeraldSandbox(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,  # published templates never change: no stat() per include once loaded
        cache_size=1000,
    )
    env.filters = safe_filters()
    env.filters.update(babel_filters(Locale.parse(locale, sep="-")))
    env.filters[_GUARD_LOOP] = guard_loop
    env.filters[_GUARD_SIZE] = _guard_size_pass
    # tracked_link is link under a name no manifest may declare: shared partials use it, since a template
    # with a variable named "link" (magic_link_login) shadows the helper.
    env.globals = {"range": guarded_range, "dict": dict, "link": link, "tracked_link": link}
    return env


def _guard_size_pass(value: Any) -> Any:
    check_size(value)
    return value
