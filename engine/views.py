"""What the API shows of a message: status, attempts and events, with public ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.ids import format_message_id


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def message_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "message_id": format_message_id(row["id"]),
        "status": row["status"],
        "channel": row["channel"],
        "template_id": f"{row['template_id']}:v{row['template_version']}",
        "locale": row["locale"],
        "requested_locale": row["requested_locale"],
        "priority": row["priority"],
        "provider": row["provider"],
        "provider_message_id": row["provider_message_id"],
        "attempt_count": row["attempts"],
        "schedule_at": _iso(row["schedule_at"]),
        "expires_at": _iso(row["expires_at"]),
        "metadata": row["metadata"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "sent_at": _iso(row["sent_at"]),
        "deduplicated_of": format_message_id(row["deduplicated_of"]) if row.get("deduplicated_of") else None,
        "attempts": [
            {
                "attempt": a["attempt_no"],
                "provider": a["provider"],
                "provider_message_id": a["provider_message_id"],
                "outcome": a["outcome"],
                "error": (
                    {"class": a["error_class"], "code": a["error_code"], "detail": a["error_detail"]}
                    if a["error_class"]
                    else None
                ),
                "cost_usd": a["cost_usd"],
                "started_at": a["started_at"],
                "finished_at": a["finished_at"],
            }
            for a in row["attempt_rows"]
        ],
        "events": [
            {"type": e["type"], "at": e["recorded_at"], "occurred_at": e["occurred_at"], "meta": e["meta"]}
            for e in row["event_rows"]
        ],
    }
