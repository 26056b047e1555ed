"""Batches of notifications (``POST /api/batch``) and producers on the ingress queue.

- :mod:`.parse`: a batch body (JSON array or NDJSON) split into items.
- :mod:`.service`: each item checked, keyed and answered on its own, all stored in a few statements;
  a batch's progress and its cancel.
"""

from .parse import MAX_ITEMS, NDJSON_CONTENT_TYPE, Screen, Unreadable, is_ndjson, split_items
from .service import BatchIntake, BatchProgress, BatchResult, ItemResult, format_batch_id, parse_batch_id

__all__ = [
    "MAX_ITEMS",
    "NDJSON_CONTENT_TYPE",
    "BatchIntake",
    "BatchProgress",
    "BatchResult",
    "ItemResult",
    "Screen",
    "Unreadable",
    "format_batch_id",
    "is_ndjson",
    "parse_batch_id",
    "split_items",
]
