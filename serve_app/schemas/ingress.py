"""``/api/ingress/key``: the key that signs a tenant's messages on the ingress queue."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from engine.batch.ingress import INGRESS_QUEUE, SIGNATURE_HEADER, TENANT_HEADER


class IngressKeyOut(BaseModel):
    """The tenant's ingress key, and how producers use it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key": "hik_6Tq3...",
                    "previous_expires_at": None,
                    "rotated_at": None,
                    "queue": INGRESS_QUEUE,
                    "tenant_header": TENANT_HEADER,
                    "signature_header": SIGNATURE_HEADER,
                }
            ]
        }
    )

    key: str = Field(description="HMAC-SHA256 key: the signature is v1=hex(HMAC(key, tenant + '.' + body))")
    previous_expires_at: datetime | None = Field(
        None, description="after a rotation, until when the previous key still verifies"
    )
    rotated_at: datetime | None = None
    queue: str = Field(INGRESS_QUEUE, description="the RabbitMQ queue producers publish to")
    tenant_header: str = TENANT_HEADER
    signature_header: str = SIGNATURE_HEADER
