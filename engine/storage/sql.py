"""SQL statements of the repository, kept apart so each reads as one piece."""

from engine.storage.recipients_store import CLAIM_SUPPRESSION_CATEGORIES

_TENANT_COLUMNS = "id, slug, name, region, config, config_version, templates_version"

GET_TENANT = f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE slug = $1"

ENSURE_TENANT = f"""
WITH ins AS (
    INSERT INTO tenants (id, slug, name, region) VALUES ($1, $2, $3, $4)
    ON CONFLICT (slug) DO NOTHING
    RETURNING {_TENANT_COLUMNS}
)
SELECT * FROM ins
UNION ALL
SELECT {_TENANT_COLUMNS} FROM tenants WHERE slug = $2
LIMIT 1
"""

# One round trip per accepted request: the idempotency key, the message, its tags, its outbox row, its
# first event and its attachments. An expired key may be reused; a live one makes every other insert a no-op.
# The outbox row's id comes back (none: the key was live). $34 holds the row back from the relay for that
# many seconds: the accepting process publishes the message itself (engine.handoff).
#: An accept's idempotency key: claimed when free or expired; a live one is left as it is (no row returned).
KEY_CLAIMED_UNLESS_LIVE = """ON CONFLICT (tenant_id, key) DO UPDATE
        SET request_hash = EXCLUDED.request_hash, message_id = EXCLUDED.message_id,
            status_code = EXCLUDED.status_code, response = EXCLUDED.response,
            created_at = now(), expires_at = EXCLUDED.expires_at
        WHERE k.expires_at < now()"""

ACCEPT = f"""
WITH idem AS (
    INSERT INTO idempotency_keys AS k
        (tenant_id, key, request_hash, message_id, status_code, response, expires_at)
    VALUES ($1, $2, $3, $4, 202, $5, now() + make_interval(secs => $6))
    {KEY_CLAIMED_UNLESS_LIVE}
    RETURNING message_id
), msg AS (
    INSERT INTO messages (id, tenant_id, channel, template_id, template_version, locale, requested_locale,
                          "to", variables, metadata, priority, schedule_at, ttl_seconds, expires_at,
                          idempotency_key, callback_url, trace_id, status, category, estimated_cost)
    SELECT message_id, $1, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $2, $19, $20, $21, $31, $33
    FROM idem
    RETURNING id, created_at
), tags AS (
    INSERT INTO message_tags (tenant_id, tag, created_at, message_id)
    SELECT $1, t.tag, msg.created_at, msg.id FROM msg, unnest($32::text[]) AS t(tag)
), ob AS (
    INSERT INTO outbox (tenant_id, message_id, queue, priority, available_at)
    SELECT $1, id, $22, $23, greatest(coalesce($16, now()), now()) + make_interval(secs => $34) FROM msg
    RETURNING id
), ev AS (
    INSERT INTO notification_events (id, tenant_id, message_id, type, meta)
    SELECT $24, $1, id, $25, $26 FROM msg
), att AS (
    INSERT INTO attachments (id, tenant_id, message_id, storage, filename, content_type)
    SELECT a.id, $1, msg.id, a.storage, a.filename, a.content_type
    FROM msg, unnest($27::uuid[], $28::text[], $29::text[], $30::text[])
         AS a(id, storage, filename, content_type)
)
SELECT id FROM ob
"""

# ACCEPT for a group of messages with distinct keys (what arrived while the statement before was in flight):
# one row of arrays per column, the same rows written as ACCEPT writes them for each message whose key
# is free (or expired); the ids of those it stored come back, each with its outbox row's.
ACCEPT_MANY = f"""
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::jsonb[], $6::float8[], $7::text[],
                         $8::text[], $9::int[], $10::text[], $11::text[], $12::jsonb[], $13::jsonb[], $14::jsonb[],
                         $15::text[], $16::timestamptz[], $17::int[], $18::timestamptz[], $19::text[], $20::text[],
                         $21::text[], $22::text[], $23::smallint[], $24::uuid[], $25::text[], $26::jsonb[],
                         $27::text[], $28::numeric[], $36::float8[])
    AS i(tenant_id, key, request_hash, message_id, response, ttl_s, channel, template_id, template_version, locale,
         requested_locale, "to", variables, metadata, priority, schedule_at, ttl_seconds, expires_at, callback_url,
         trace_id, status, queue, rank, event_id, event_type, event_meta, category, estimated_cost, hold_s)
), idem AS (
    INSERT INTO idempotency_keys AS k
        (tenant_id, key, request_hash, message_id, status_code, response, expires_at)
    SELECT tenant_id, key, request_hash, message_id, 202, response, now() + make_interval(secs => ttl_s)
    FROM input
    {KEY_CLAIMED_UNLESS_LIVE}
    RETURNING message_id
), msg AS (
    INSERT INTO messages (id, tenant_id, channel, template_id, template_version, locale, requested_locale,
                          "to", variables, metadata, priority, schedule_at, ttl_seconds, expires_at,
                          idempotency_key, callback_url, trace_id, status, category, estimated_cost)
    SELECT i.message_id, i.tenant_id, i.channel, i.template_id, i.template_version, i.locale, i.requested_locale,
           i."to", i.variables, i.metadata, i.priority, i.schedule_at, i.ttl_seconds, i.expires_at, i.key,
           i.callback_url, i.trace_id, i.status, i.category, i.estimated_cost
    FROM input i JOIN idem USING (message_id)
    RETURNING id, tenant_id, created_at
), tags AS (
    INSERT INTO message_tags (tenant_id, tag, created_at, message_id)
    SELECT msg.tenant_id, t.tag, msg.created_at, msg.id
    FROM msg JOIN unnest($29::uuid[], $30::text[]) AS t(message_id, tag) ON t.message_id = msg.id
), ob AS (
    INSERT INTO outbox (tenant_id, message_id, queue, priority, available_at)
    SELECT i.tenant_id, i.message_id, i.queue, i.rank,
           greatest(coalesce(i.schedule_at, now()), now()) + make_interval(secs => i.hold_s)
    FROM input i JOIN msg ON msg.id = i.message_id
    RETURNING id, message_id
), ev AS (
    INSERT INTO notification_events (id, tenant_id, message_id, type, meta)
    SELECT i.event_id, i.tenant_id, i.message_id, i.event_type, i.event_meta
    FROM input i JOIN msg ON msg.id = i.message_id
), att AS (
    INSERT INTO attachments (id, tenant_id, message_id, storage, filename, content_type)
    SELECT a.id, msg.tenant_id, msg.id, a.storage, a.filename, a.content_type
    FROM msg JOIN unnest($31::uuid[], $32::uuid[], $33::text[], $34::text[], $35::text[])
         AS a(id, message_id, storage, filename, content_type) ON a.message_id = msg.id
)
SELECT message_id, id FROM ob
"""

GET_IDEMPOTENCY = """
SELECT request_hash, status_code, response FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2 AND expires_at >= now()
"""

MESSAGE_VIEW = """
SELECT m.id, m.channel, m.template_id, m.template_version, m.locale, m.requested_locale, m.priority,
       m.status, m.provider, m.provider_message_id, m.attempts, m.schedule_at, m.expires_at,
       m.idempotency_key, m.metadata, m.created_at, m.updated_at, m.sent_at, m.deduplicated_of,
       (SELECT coalesce(json_agg(a ORDER BY a.started_at, a.attempt_no), '[]'::json) FROM (
            SELECT attempt_no, provider, provider_message_id, outcome, error_class, error_code,
                   error_detail, cost_usd, started_at, finished_at
            FROM attempts WHERE tenant_id = $1 AND message_id = $2) a) AS attempt_rows,
       (SELECT coalesce(json_agg(e ORDER BY e.recorded_at, e.id), '[]'::json) FROM (
            SELECT id, type, meta, occurred_at, recorded_at
            FROM notification_events WHERE tenant_id = $1 AND message_id = $2) e) AS event_rows
FROM messages m
WHERE m.tenant_id = $1 AND m.id = $2
"""

# The claim commits without waiting for its WAL flush (``synchronous_commit`` off for its transaction
# alone): under a burst that flush waits behind the burst's writes, and a lease need not be durable. Lost
# in a crash, the message is only back as it was, its envelope unacked (the ack follows the record, a
# durable commit that flushes the claim with it), so it is delivered and claimed again: at least once.
CLAIM = f"""
UPDATE messages m
SET status = 'sending', claimed_until = now() + make_interval(secs => $2), attempts = m.attempts + 1,
    version = m.version + 1, updated_at = now()
FROM tenants t, (SELECT set_config('synchronous_commit', 'off', true)) AS lazy_commit
WHERE t.id = m.tenant_id
  AND m.id = ANY($1::uuid[])
  AND (m.status IN ('queued', 'scheduled', 'throttled')
       OR (m.status = 'sending' AND m.claimed_until < now()))
RETURNING m.id, m.tenant_id, t.slug, t.templates_version, t.config_version, m.channel, m.template_id,
          m.template_version, m.locale, m."to", m.variables, m.metadata, m.priority, m.attempts, m.created_at,
          m.expires_at, m.pinned_provider, m.estimated_cost,
          -- the last pass timed out after sending (outcome unknown): the retry goes to the same provider
          (SELECT a.provider FROM attempts a
           WHERE a.tenant_id = m.tenant_id AND a.message_id = m.id AND a.attempt_no = m.attempts - 1
             AND a.outcome = 'unknown'
           LIMIT 1) AS sent_maybe_provider,
          t.unsubscribe_generation,
          -- every suppression entry's category for the address; the sender decides with the tenant's
          -- required categories (engine.governance.recipients.suppressed_by)
          {CLAIM_SUPPRESSION_CATEGORIES} AS suppression_categories,
          (SELECT coalesce(json_agg(json_build_object('s3', a.storage, 'filename', a.filename,
                                                      'content_type', a.content_type)), '[]'::json)
           FROM attachments a WHERE a.message_id = m.id) AS attachment_refs
"""

#: The counter stripe a sender's statement adds to (migration 0014): one of 8 per priority, by connection,
#: so a one-time code's record never waits on a burst's lock of its tenant's month or day.
SENDER_STRIPE = "(1 + 8 * u.priority + pg_backend_pid() % 8)::smallint"

RECORD = f"""
WITH u AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[], $6::timestamptz[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[],
                         $13::text[], $14::smallint[], $15::timestamptz[], $16::int[], $17::bool[],
                         $18::text[], $19::uuid[], $20::uuid[], $21::text[], $22::text[], $23::text[],
                         $32::uuid[])
    AS u(id, tenant_id, status, event, attempt_no, started_at, provider, provider_message_id,
         error_class, error_code, error_detail, cost_usd, queue, priority, available_at, refund,
         attempted, meta, attempt_id, event_id, suppress_kind, suppress_address, attempt_outcome,
         deduplicated_of)
), tried AS (
    -- providers a message failed over from in this pass: one attempt row each
    SELECT * FROM unnest($24::uuid[], $25::uuid[], $26::text[], $27::timestamptz[], $28::text[], $29::text[],
                         $30::text[], $31::text[])
    AS t(attempt_id, message_id, provider, started_at, error_class, error_code, error_detail, outcome)
), pre AS (
    -- the estimates as they were before this statement (upd clears a settled one)
    SELECT m.id, m.estimated_cost FROM messages m WHERE m.id = ANY($1::uuid[]) AND m.estimated_cost IS NOT NULL
), upd AS (
    UPDATE messages m
    SET status = u.status,
        provider = coalesce(u.provider, m.provider),
        provider_message_id = coalesce(u.provider_message_id, m.provider_message_id),
        attempts = m.attempts - u.refund,
        claimed_until = NULL,
        version = m.version + 1,
        updated_at = now(),
        sent_at = CASE WHEN u.status = 'sent' THEN now() ELSE m.sent_at END,
        deduplicated_of = coalesce(u.deduplicated_of, m.deduplicated_of),
        estimated_cost = CASE WHEN u.status IN ('sent', 'failed', 'dead', 'suppressed', 'expired', 'deduplicated')
                              THEN NULL ELSE m.estimated_cost END
    FROM u
    WHERE m.id = u.id AND m.status = 'sending'
    RETURNING m.id, m.channel, m.template_id, m.template_version, m.created_at
), att AS (
    INSERT INTO attempts (id, tenant_id, message_id, attempt_no, provider, provider_message_id, outcome,
                          error_class, error_code, error_detail, cost_usd, started_at)
    SELECT u.attempt_id, u.tenant_id, u.id, u.attempt_no, u.provider, u.provider_message_id,
           coalesce(u.attempt_outcome, u.status), u.error_class, u.error_code, u.error_detail, u.cost_usd,
           u.started_at
    FROM u JOIN upd ON upd.id = u.id
    WHERE u.attempted
    UNION ALL
    SELECT t.attempt_id, u.tenant_id, u.id, u.attempt_no, t.provider, NULL, t.outcome, t.error_class,
           t.error_code, t.error_detail, NULL, t.started_at
    FROM tried t JOIN u ON u.id = t.message_id JOIN upd ON upd.id = t.message_id
), ev AS (
    INSERT INTO notification_events (id, tenant_id, message_id, type, meta)
    SELECT u.event_id, u.tenant_id, u.id, u.event, u.meta::jsonb
    FROM u JOIN upd ON upd.id = u.id
), ob AS (
    INSERT INTO outbox (tenant_id, message_id, queue, priority, available_at)
    SELECT u.tenant_id, u.id, u.queue, u.priority, coalesce(u.available_at, now())
    FROM u JOIN upd ON upd.id = u.id
    WHERE u.queue IS NOT NULL
), sup AS (
    INSERT INTO suppressions (id, tenant_id, kind, address, reason)
    SELECT u.event_id, u.tenant_id, u.suppress_kind, u.suppress_address, coalesce(u.error_code, u.error_class)
    FROM u JOIN upd ON upd.id = u.id
    WHERE u.suppress_kind IS NOT NULL
    ON CONFLICT (tenant_id, kind, address, category) DO NOTHING
), roll AS (
    INSERT INTO analytics_daily AS r
        (tenant_id, day, channel, template_id, template_version, provider, stripe, sent, failed, suppressed,
         expired)
    SELECT u.tenant_id, (upd.created_at AT TIME ZONE 'UTC')::date, upd.channel, upd.template_id,
           upd.template_version, coalesce(u.provider, ''), {SENDER_STRIPE},
           count(*) FILTER (WHERE u.status = 'sent'), count(*) FILTER (WHERE u.status IN ('failed', 'dead')),
           count(*) FILTER (WHERE u.status = 'suppressed'), count(*) FILTER (WHERE u.status = 'expired')
    FROM u JOIN upd ON upd.id = u.id
    WHERE u.status IN ('sent', 'failed', 'dead', 'suppressed', 'expired')
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ORDER BY 1, 2, 3, 4, 5, 6, 7  -- one lock order for every writer of the rollups
    ON CONFLICT (tenant_id, day, channel, template_id, template_version, provider, stripe) DO UPDATE
    SET sent = r.sent + EXCLUDED.sent, failed = r.failed + EXCLUDED.failed,
        suppressed = r.suppressed + EXCLUDED.suppressed, expired = r.expired + EXCLUDED.expired
), spend AS (
    -- budgets settled with the status move (exactly once): a done message's estimate leaves the month's
    -- reservation (the month it was accepted in) and a sent one's cost joins its spend
    INSERT INTO budget_spend AS b (tenant_id, channel, month, stripe, reserved, spent, sent)
    SELECT u.tenant_id, upd.channel, date_trunc('month', upd.created_at AT TIME ZONE 'UTC')::date, {SENDER_STRIPE},
           -coalesce(sum(pre.estimated_cost), 0),
           coalesce(sum(u.cost_usd::numeric) FILTER (WHERE u.status = 'sent'), 0),
           count(*) FILTER (WHERE u.status = 'sent')
    FROM u JOIN upd ON upd.id = u.id LEFT JOIN pre ON pre.id = u.id
    WHERE (pre.estimated_cost IS NOT NULL AND u.status IN ('failed', 'dead', 'suppressed', 'expired'))
       OR u.status = 'sent'
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (tenant_id, channel, month, stripe) DO UPDATE
    SET reserved = b.reserved + EXCLUDED.reserved, spent = b.spent + EXCLUDED.spent, sent = b.sent + EXCLUDED.sent,
        updated_at = now()
)
SELECT count(*) FROM upd
"""

# Expired leases (a sender died mid-send) go back to queued, with an outbox row so they are published
# again. The attempt the dead sender started counts: a message that kills senders cannot loop forever.
RECLAIM = """
WITH stale AS (
    SELECT id FROM messages
    WHERE status = 'sending' AND claimed_until < now()
    ORDER BY claimed_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE messages m SET status = 'queued', claimed_until = NULL, version = m.version + 1, updated_at = now()
    FROM stale WHERE m.id = stale.id
    RETURNING m.id, m.tenant_id, m.priority
), ob AS (
    INSERT INTO outbox (tenant_id, message_id, queue, priority)
    SELECT tenant_id, id, 'notifications.' || priority,
           CASE priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END
    FROM upd
)
SELECT count(*) FROM upd
"""

# Due rows, high priority first, oldest first within a priority: one ordered range of the outbox_due
# index (priority, available_at, id) per priority, read lazily (a branch is not read once the limit is
# met), so rows scheduled for later are never read however many there are.
_DUE_AT_PRIORITY = """SELECT * FROM (
        SELECT id FROM outbox WHERE priority = {rank} AND available_at <= now(){gate}
        ORDER BY available_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) p{rank}"""
# $2 and $3 let normal and low rows through (the relay's backlog cap, engine.relay.BacklogGate): a false
# one is a one-time filter, its branch never read. The due ids are gathered first, into an array, and
# the rows deleted by their primary key: joined back to the outbox instead, the planner chose a hash join
# over a scan of the whole table once its statistics counted a burst (100 ms for each 1,000-row pass of a
# 100,000-row burst, instead of 10).
TAKE_OUTBOX = f"""
DELETE FROM outbox o
WHERE o.id = ANY(ARRAY(
    SELECT id FROM (
        {_DUE_AT_PRIORITY.format(rank=0, gate="")}
        UNION ALL {_DUE_AT_PRIORITY.format(rank=1, gate=" AND $2::bool")}
        UNION ALL {_DUE_AT_PRIORITY.format(rank=2, gate=" AND $3::bool")}
    ) ranked
    LIMIT $1
))
RETURNING o.id, o.tenant_id, o.message_id, o.queue, o.priority
"""

# The relay's high lane: only the due high-priority rows (the first range of the same index).
TAKE_OUTBOX_HIGH = f"""
DELETE FROM outbox o
WHERE o.id = ANY(ARRAY({_DUE_AT_PRIORITY.format(rank=0, gate="")}))
RETURNING o.id, o.tenant_id, o.message_id, o.queue, o.priority
"""
