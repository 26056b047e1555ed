"""constraints.txt pins everything the base install and the ``test`` extra bring in (refresh: README)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)")


def pins() -> dict[str, Version]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        match = _PIN.match(line.strip())
        if match:
            found[canonicalize_name(match[1])] = Version(match[2])
    return found


def requirements(name: str, extras: set[str]) -> list[Requirement]:
    """What ``name[extras]`` needs on this interpreter, from its installed metadata."""
    wanted = []
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras | {""}):
            wanted.append(requirement)
    return wanted


def closure() -> list[Requirement]:
    """Every requirement reached from herald[test] (herald[fakes] included), each once per extras set."""
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [Requirement("herald[test,fakes]")]
    reached = []
    while queue:
        requirement = queue.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        if key[0] != "herald":
            reached.append(requirement)
        queue += requirements(requirement.name, set(requirement.extras))
    return reached


def test_every_dependency_is_pinned_within_what_its_dependents_allow() -> None:
    pinned = pins()
    missing = sorted({canonicalize_name(r.name) for r in closure()} - set(pinned))
    assert not missing, f"not in constraints.txt (refresh it, see README): {missing}"
    outside = [f"{r} but pinned {pinned[canonicalize_name(r.name)]}" for r in closure()
               if not r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True)]  # fmt: skip
    assert not outside, f"constraints.txt disagrees with the requirements (refresh it): {outside}"
    assert "herald" not in pinned  # pip refuses a constraint on the project being installed
