"""Schema-driven fuzzing of every operation in /openapi.json against the session's stack.

About 20 cases per operation (positive data, then data that breaks the schema), with valid tokens: the
platform's for platform routes, otherwise an admin token of a throwaway tenant, so whatever the
destructive routes change belongs to nobody else (routes either may call, such as the DLQ replay, get the
tenant's: the platform's `{"all": true}` would replay every tenant's dead messages). Each answer must be
no 5xx and match what the document promises (status code, content type, headers, body schema).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import Herald

pytestmark = [pytest.mark.ray, pytest.mark.integration]

#: Cases per operation and mode: about 20 per route in all.
EXAMPLES = {GenerationMode.POSITIVE: 14, GenerationMode.NEGATIVE: 6}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def headers_for(operation: Any, tokens: dict[str, str]) -> dict[str, str]:
    requirements = operation.definition.raw.get("security", [])
    scopes = {scope for requirement in requirements for scope in requirement.get("bearer", [])}
    if not requirements:
        return {}
    return {"Authorization": f"Bearer {tokens['platform' if scopes == {'platform'} else 'tenant']}"}


def modes(operation: Any) -> list[GenerationMode]:
    """Data that breaks the schema needs something to break: parameters or a body."""
    raw = operation.definition.raw
    takes_input = bool(raw.get("parameters")) or "requestBody" in raw
    return list(EXAMPLES) if takes_input else [GenerationMode.POSITIVE]


def fuzz(operation: Any, mode: GenerationMode, base_url: str, tokens: dict[str, str], tally: Tally) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    headers = headers_for(operation, tokens)

    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # report the first failure as found, no shrinking
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        tally.cases[label] += 1
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        if response.status_code >= 500:
            tally.server_errors.append(f"{label} -> {response.status_code}: {response.text[:300]}")
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        run()
    except (Exception, BaseExceptionGroup) as err:  # schemathesis reports its failures as a group
        tally.failures[f"{label} ({mode.value})"] = str(err)[:2000]


def test_every_operation_survives_schema_driven_fuzzing(herald: Herald, capsys: pytest.CaptureFixture[str]) -> None:
    doc = httpx.get(f"{herald.base_url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    throwaway = f"t_fuzz_{uuid.uuid4().hex[:8]}"
    tokens = {"tenant": herald.token(throwaway, admin=True), "platform": herald.platform_token()}
    tally = Tally()
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in modes(operation):
            fuzz(operation, mode, herald.base_url, tokens, tally)
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\nfuzz: {sum(tally.cases.values())} cases over {len(operations)} operations in {elapsed:.0f}s, "
            f"{len(tally.server_errors)} answered 5xx, {len(tally.failures)} operation/mode runs failed"
        )
    assert len(operations) == len(tally.cases) >= 20
    report = "\n".join(tally.server_errors) + "\n\n" + "\n\n".join(f"{k}:\n{v}" for k, v in tally.failures.items())
    assert not tally.server_errors and not tally.failures, report
