"""``/api/batch`` and ``/api/batches/{id}``: a batch's per-item answers, its progress and its cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.json_schema import models_json_schema

from engine.batch import MAX_ITEMS, NDJSON_CONTENT_TYPE, BatchProgress, BatchResult
from engine.models import NotificationRequest
from serve_app.schemas.problems import REF_PREFIX, FieldProblem

BATCH_ID_PATTERN = r"^bat_[0-9a-f]{32}$"


class BatchItem(BaseModel):
    """One item's answer: `code` 202 with its `message_id` and `status` (accepted, or replayed from an
    earlier use of its key), or 403/409/422 with the fields at fault (located as `["body", index, ...]`)."""

    index: int = Field(ge=0, description="the item's position in the request (0-based; NDJSON: its line)")
    code: int = Field(description="202 accepted or replayed; 403, 409 or 422 refused")
    message_id: str | None = Field(None, pattern=r"^msg_[0-9a-f]{32}$")
    status: str | None = Field(None, description="the message's status when accepted: queued or scheduled")
    replayed: bool = Field(False, description="answered from an earlier request with the same key and body")
    errors: list[FieldProblem] = Field(default_factory=list)


class BatchAccepted(BaseModel):
    """202: the batch was read; each item has its own answer, in request order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "batch_id": "bat_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b",
                    "accepted": 1,
                    "replayed": 0,
                    "rejected": 1,
                    "items": [
                        {
                            "index": 0,
                            "code": 202,
                            "message_id": "msg_0190b5a7c2f37d8e9a1b2c3d4e5f6a7c",
                            "status": "queued",
                            "replayed": False,
                            "errors": [],
                        },
                        {
                            "index": 1,
                            "code": 422,
                            "message_id": None,
                            "status": None,
                            "replayed": False,
                            "errors": [
                                {
                                    "loc": ["body", 1, "to", "email"],
                                    "msg": "value is not a valid email address",
                                    "type": "value_error",
                                }
                            ],
                        },
                    ],
                }
            ]
        }
    )

    batch_id: str = Field(pattern=BATCH_ID_PATTERN)
    accepted: int = Field(description="messages this batch created")
    replayed: int = Field(description="items answered from an earlier use of their key")
    rejected: int = Field(description="items refused, each with its errors")
    items: list[BatchItem]

    @classmethod
    def of(cls, result: BatchResult) -> dict[str, Any]:
        """The answer as plain JSON (10,000 items: built directly, not validated again)."""
        return {
            "batch_id": result.batch_id,
            "accepted": result.accepted,
            "replayed": result.replayed,
            "rejected": result.rejected,
            "items": [
                {
                    "index": i.index,
                    "code": i.code,
                    "message_id": i.message_id,
                    "status": i.status,
                    "replayed": i.replayed,
                    "errors": [e.as_dict() for e in i.errors],
                }
                for i in result.items
            ],
        }


class BatchView(BaseModel):
    """A batch's progress: its messages counted by status, the rate they are done at and an ETA."""

    batch_id: str = Field(pattern=BATCH_ID_PATTERN)
    items: int
    accepted: int
    replayed: int
    rejected: int
    counts: dict[str, int] = Field(description="the messages this batch created, by status")
    pending: int = Field(description="not done yet: scheduled, queued, throttled or sending")
    done: int = Field(description="sent, delivered, failed, cancelled, ...: nothing more to do")
    rate_per_s: float | None = Field(None, description="messages done per second since the batch was accepted")
    eta_s: float | None = Field(None, description="seconds until the pending ones are done, at that rate")
    created_at: datetime
    cancelled_at: datetime | None = None

    @classmethod
    def of(cls, progress: BatchProgress) -> BatchView:
        return cls.model_validate(progress, from_attributes=True)


class BatchCancelled(BatchView):
    """The batch after its cancel: `cancelled` messages will never be sent."""

    cancelled: int = Field(description="messages this call cancelled (not yet sending)")


class BatchRequest(RootModel[list[NotificationRequest]]):
    """Up to 10,000 notifications, each the body of `POST /api/notifications` with its own
    `idempotency_key` (as NDJSON: one per line)."""

    root: list[NotificationRequest] = Field(max_length=MAX_ITEMS)


def batch_components() -> dict[str, Any]:
    """The component schemas the batch body refers to (the route reads the raw body itself)."""
    _, doc = models_json_schema([(BatchRequest, "validation")], ref_template=REF_PREFIX + "{model}")
    return dict(doc.get("$defs", {}))


#: The request body as the OpenAPI document shows it.
REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            f"Up to {MAX_ITEMS} notifications, each the body of `POST /api/notifications` with its own "
            "`idempotency_key`: a JSON array, or NDJSON (one per line) as `application/x-ndjson`."
        ),
        "content": {
            "application/json": {"schema": {"$ref": REF_PREFIX + "BatchRequest"}},
            NDJSON_CONTENT_TYPE: {"schema": {"type": "string"}},
        },
    }
}
