"""The import layers of ARCHITECTURE.md, checked on the source: imports point downwards only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> top-level packages it must not import.
FORBIDDEN: dict[str, set[str]] = {
    "engine": {"ray", "actors", "serve_app", "fastapi", "starlette"},
    "drivers": {"ray", "actors", "serve_app", "fastapi"},
    "actors": {"serve_app"},
}
#: drivers know the shared vocabulary of engine/ (errors, channels, redaction, the delivery event model), nothing else.
DRIVERS_MAY_IMPORT_FROM_ENGINE = {"engine.errors", "engine.channels", "engine.redaction", "engine.feedback.events"}


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "fakes" not in p.parts)


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
