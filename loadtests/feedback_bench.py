"""Provider webhook events ingested per second, beside a bare insert of the same rows.

    python -m loadtests.feedback_bench [--events 20000] [--batch 1000] [--database-url postgresql://...]

Sends ``--events`` messages' worth of SendGrid event batches (``--batch`` events per request, as SendGrid
posts them: delivered, open, click, bounce, deferred) through the parser and ``FeedbackIngest.ingest``
(message lookup, status moves, dedupe, raw payloads, engagement, suppressions, rollups, webhook queue),
and, on the same database, a bare ``INSERT ... SELECT FROM unnest`` of the same event rows per batch:
the floor any design pays for writing them. Without --database-url (or DATABASE_URL) it uses the
embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from drivers.email.sendgrid_webhooks import parse_events
from engine.channels import Channel
from engine.feedback.ingest import FeedbackIngest
from engine.ids import new_id
from engine.storage.repository import create_pool
from loadtests.bench import drop, prepare

KINDS = ("delivered", "open", "click", "bounce", "deferred")
AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"

_SENT = """
WITH m AS (
    INSERT INTO messages (id, tenant_id, channel, template_id, template_version, locale, "to", priority, status,
                          provider, provider_message_id, sent_at)
    SELECT u.id, $1, 'email', 'welcome', 1, 'en', jsonb_build_object('email', u.address), 'normal', 'sent',
           'sendgrid', u.pmid, now()
    FROM unnest($2::uuid[], $3::text[], $4::text[]) AS u(id, pmid, address)
    RETURNING id, provider_message_id
)
INSERT INTO attempts (id, tenant_id, message_id, attempt_no, provider, provider_message_id, outcome, started_at)
SELECT gen_random_uuid(), $1, m.id, 1, 'sendgrid', m.provider_message_id, 'sent', now() FROM m
"""

_BARE = """
INSERT INTO notification_events (id, tenant_id, message_id, type, meta, dedupe_key, occurred_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[], $6::text[], $7::timestamptz[])
"""


def batches(sent: list[tuple[uuid.UUID, str, str]], size: int) -> list[bytes]:
    now = int(time.time())
    out = []
    for start in range(0, len(sent), size):
        events = [
            {
                "email": address,
                "timestamp": now,
                "event": KINDS[i % len(KINDS)],
                "sg_event_id": uuid.uuid4().hex,
                "sg_message_id": f"{pmid}.filter0001.16648.5515E0B88.0",
                "useragent": AGENT,
                "url": "https://shop.example/offer",
            }
            for i, (_, pmid, address) in enumerate(sent[start : start + size], start)
        ]
        out.append(json.dumps(events).encode())
    return out


async def run(dsn: str, n: int, size: int) -> dict[str, float]:
    pool = await create_pool(dsn, min_size=2, max_size=4)
    tenant_id = new_id()
    await pool.execute(
        "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, $2)", tenant_id, f"bench_{tenant_id.hex[:8]}"
    )
    sent = [(new_id(), uuid.uuid4().hex[:22], f"user{i}@example.com") for i in range(2 * n)]
    for start in range(0, len(sent), 10_000):
        chunk = sent[start : start + 10_000]
        await pool.execute(_SENT, tenant_id, [s[0] for s in chunk], [s[1] for s in chunk], [s[2] for s in chunk])
    ingest = FeedbackIngest(pool)
    herald_bodies = batches(sent[:n], size)
    bare_messages = sent[n:]

    start = time.perf_counter()
    recorded = 0
    for raw in herald_bodies:
        recorded += (await ingest.ingest("sendgrid", Channel.EMAIL, parse_events(raw))).recorded
    herald_s = time.perf_counter() - start

    start = time.perf_counter()
    for k in range(0, len(bare_messages), size):
        chunk = bare_messages[k : k + size]
        await pool.execute(
            _BARE,
            [new_id() for _ in chunk],
            [tenant_id] * len(chunk),
            [m[0] for m in chunk],
            ["NotificationDelivered"] * len(chunk),
            [{"provider": "sendgrid"}] * len(chunk),
            [f"sendgrid:{uuid.uuid4().hex}" for _ in chunk],
            [datetime.now(UTC)] * len(chunk),
        )
    bare_s = time.perf_counter() - start
    await pool.close()
    assert recorded == n, f"recorded {recorded} of {n}"
    return {"ingest_events_per_s": n / herald_s, "bare_insert_events_per_s": n / bare_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    admin = args.database_url
    if not admin:
        from engine.storage.embedded import embedded_database_url

        admin = embedded_database_url(Path(tempfile.mkdtemp(prefix="herald-bench-")))
    url = asyncio.run(prepare(admin))
    try:
        figures = asyncio.run(run(url, args.events, args.batch))
    finally:
        asyncio.run(drop(admin, url))
    print(json.dumps({k: round(v) for k, v in figures.items()}, indent=2))
    print(f"ingest / bare insert: {figures['ingest_events_per_s'] / figures['bare_insert_events_per_s']:.2f}x")


if __name__ == "__main__":
    main()
