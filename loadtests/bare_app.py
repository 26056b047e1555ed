"""The baseline for P1: what one process answering ``POST /api/notifications`` minimally costs.

FastAPI + pydantic validate the same body, asyncpg inserts one ``messages`` row (the row Herald writes,
without template resolution, idempotency or the outbox), and the answer is a 202 with a message id. Run
by ``herald bench`` under uvicorn with one worker; on its own:

    DATABASE_URL=postgresql://... python -m loadtests.bare_app --port 8101

The database must have Herald's schema (``herald migrate``) and a tenant ``bench_bare``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import asyncpg
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, EmailStr, Field

from engine.ids import format_message_id, new_id

TENANT = "bench_bare"


class Address(BaseModel):
    email: EmailStr | None = None
    phone: str | None = None


class Notification(BaseModel):
    channel: Literal["email", "sms", "push", "whatsapp", "inapp"]
    template_id: str = Field(min_length=1, max_length=128)
    locale: str | None = None
    to: Address
    variables: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["high", "normal", "low"] = "normal"


def create_app(dsn: str) -> FastAPI:
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["pool"] = pool = await asyncpg.create_pool(dsn, min_size=4, max_size=10)
        state["tenant"] = await pool.fetchval(
            "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, $2) "
            "ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
            uuid.uuid4(),
            TENANT,
        )
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/notifications", status_code=202)
    async def accept(body: Notification, idempotency_key: str | None = Header(None)) -> JSONResponse:
        message_id: uuid.UUID = new_id()
        await state["pool"].execute(
            """INSERT INTO messages (id, tenant_id, channel, template_id, template_version, locale, "to",
                                     variables, priority, status)
               VALUES ($1, $2, $3, $4, 1, $5, $6::jsonb, $7::jsonb, $8, 'queued')""",
            message_id,
            state["tenant"],
            body.channel,
            body.template_id,
            body.locale or "en",
            body.to.model_dump_json(exclude_none=True),
            _json(body.variables),
            body.priority,
        )
        return JSONResponse({"message_id": format_message_id(message_id), "status": "queued"}, status_code=202)

    return app


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    uvicorn.run(create_app(args.database_url), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
