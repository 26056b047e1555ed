"""The warn-once clauses of a counter upsert with a soft cap (``quota_counters``, ``budget_spend``).

Every ingress replica adds its counts in one statement per reconcile, which stamps its ``token`` into
``warn_token`` when it is the one that first takes a row to its soft cap; ``warned_now`` answers whether
this statement did. Across replicas, exactly one warning is raised per row.

Each table says what its total is: the insert's values when the row is new, and the sum of the stored
row and the added values on conflict.
"""

from __future__ import annotations


def warn_on_insert(total: str, *, token: str) -> str:
    """``warn_token, warned_at`` of a new row whose first ``total`` already reaches ``soft_cap``."""
    reached = f"soft_cap IS NOT NULL AND {total} >= soft_cap"
    return f"CASE WHEN {reached} THEN {token} END,\n       CASE WHEN {reached} THEN now() END"


def warn_on_conflict(alias: str, total: str, *, token: str) -> str:
    """The ``SET`` of ``warn_token`` and ``warned_at`` for a row ``alias`` (not yet warned) whose
    ``total`` after this add reaches the cap."""
    reached = (
        f"{alias}.warn_token IS NULL AND EXCLUDED.soft_cap IS NOT NULL\n"
        f"                           AND {total} >= EXCLUDED.soft_cap"
    )
    return (
        f"warn_token = CASE WHEN {reached}\n"
        f"                      THEN {token} ELSE {alias}.warn_token END,\n"
        f"    warned_at = CASE WHEN {reached}\n"
        f"                     THEN now() ELSE {alias}.warned_at END"
    )


def warned_now(token: str) -> str:
    """The ``RETURNING`` column that says whether this statement warned."""
    return f"warn_token IS NOT DISTINCT FROM {token} AS warned_now"
