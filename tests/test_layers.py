"""The import layers of ARCHITECTURE.md, checked on the source: imports point downwards only, and no
dependency travels as a name to import (the drivers' registry is the one place that imports by name)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> top-level packages it must not import.
FORBIDDEN: dict[str, set[str]] = {
    "engine": {"ray", "actors", "serve_app", "drivers", "fastapi", "starlette"},
    "drivers": {"ray", "actors", "serve_app", "fastapi"},
    "actors": {"serve_app"},
}
#: drivers know the shared vocabulary of engine/ and its driver port and delivery event model, nothing else of it.
DRIVERS_MAY_IMPORT_FROM_ENGINE = {
    "engine.errors",
    "engine.channels",
    "engine.redaction",
    "engine.delivery",
    "engine.feedback.events",
}
PACKAGES = ("engine", "drivers", "actors", "serve_app")
#: The registry's lazy dotted paths: the one import by name allowed.
REGISTRY = ROOT / "drivers" / "__init__.py"
#: Calls that import code named by a string.
IMPORT_BY_NAME = {"import_module", "__import__", "resolve_name", "find_spec", "spec_from_file_location"}
#: A string that names code to import: ``package.module:attribute``.
DOTTED_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+:[A-Za-z_]\w*$")


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def sources(package: str, *, fakes: bool = False) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if fakes or "fakes" not in p.parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers(package: str) -> None:
    problems = []
    for path in sources(package):
        for line, module in imports(path):
            top = module.split(".")[0]
            if top in FORBIDDEN[package]:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            if package == "drivers" and top == "engine" and module not in DRIVERS_MAY_IMPORT_FROM_ENGINE:
                problems.append(f"{path.relative_to(ROOT)}:{line} reaches into {module}")
    assert not problems, "\n".join(problems)


def _called_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


@pytest.mark.parametrize("package", PACKAGES)
def test_no_dependency_is_passed_as_a_name_to_import(package: str) -> None:
    """Settings carry values, never code: no import by name, and no ``module:attribute`` string (the way
    ``HERALD_INAPP_STORE=engine.storage.inbox:from_env`` once handed the in-app driver its storage)."""
    problems = []
    for path in sources(package, fakes=True):
        if path == REGISTRY:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and _called_name(node) in IMPORT_BY_NAME:
                problems.append(f"{where} imports by name ({_called_name(node)})")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED_PATH.match(node.value):
                problems.append(f"{where} names code to import: {node.value!r}")
    assert not problems, "\n".join(problems)


def test_the_check_sees_what_it_forbids() -> None:
    """The two patterns above catch the shapes they are meant to (a check that cannot fail proves nothing)."""
    sample = 'import importlib\nSPEC = "engine.storage.inbox:from_env"\nimportlib.import_module("x")\n'
    tree = ast.parse(sample)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _called_name(n) in IMPORT_BY_NAME]
    strings = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and DOTTED_PATH.match(str(n.value))]
    assert len(calls) == 1 and len(strings) == 1


@pytest.mark.parametrize("module", ["actors.sender", "actors.control", "drivers.attachments", "drivers.email.ses"])
def test_aws_sdk_loads_at_the_first_aws_call_not_at_import(module: str) -> None:
    """aiobotocore costs every process that imports it ~18 MiB and half a second; most never call AWS."""
    import subprocess
    import sys

    code = f"import sys, {module}; print('aiobotocore' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False", f"{module} imported aiobotocore"
