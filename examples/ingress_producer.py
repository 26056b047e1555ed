"""Publish notifications to Herald's ingress queue (RabbitMQ), signed with the tenant's ingress key.

    python -m examples.ingress_producer --amqp-url amqp://guest:guest@127.0.0.1:5672/ \\
        --tenant acme --key "$(curl -s -H "Authorization: Bearer $ADMIN_TOKEN" $HERALD/api/ingress/key | jq -r .key)" \\
        --email ada@example.com

Each message is one notification (the body of ``POST /api/notifications``, with its own
``idempotency_key``), the tenant in ``x-herald-tenant`` and ``x-herald-signature: v1=<hex>``, the
HMAC-SHA256 of ``"<tenant>." + body`` under the key. Needs only ``aio-pika``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from typing import Any

import aio_pika

QUEUE = "notifications.ingress"


def signature(key: str, tenant: str, body: bytes) -> str:
    return "v1=" + hmac.new(key.encode(), tenant.encode() + b"." + body, hashlib.sha256).hexdigest()


async def publish(
    amqp_url: str, tenant: str, key: str, notifications: Iterable[dict[str, Any]], *, queue: str = QUEUE
) -> int:
    """Publish each notification as one persistent message (broker-confirmed); returns how many."""
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)  # the same declaration as Herald's consumer
        sent = []
        for notification in notifications:
            body = json.dumps(notification).encode()
            message = aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={"x-herald-tenant": tenant, "x-herald-signature": signature(key, tenant, body)},
            )
            sent.append(channel.default_exchange.publish(message, routing_key=queue))
        await asyncio.gather(*sent)
        return len(sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--key", required=True, help="the tenant's ingress key (GET /api/ingress/key)")
    parser.add_argument("--email", required=True)
    parser.add_argument("--queue", default=QUEUE, help="with HERALD_QUEUE_PREFIX set: <prefix>notifications.ingress")
    args = parser.parse_args()
    notification = {
        "channel": "email",
        "template_id": "otp_login",
        "to": {"email": args.email},
        "variables": {"code": "123456"},
        "idempotency_key": f"producer-{uuid.uuid4().hex}",
    }
    n = asyncio.run(publish(args.amqp_url, args.tenant, args.key, [notification], queue=args.queue))
    print(f"published {n} notification(s) to {args.queue}")


if __name__ == "__main__":
    main()
