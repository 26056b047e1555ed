"""Statements of events out: tenant endpoints, the delivery queue and its log.

The signing secrets are in :mod:`engine.storage.rotating_secrets`.

The delivery workers run two statements per batch: :data:`CLAIM_DELIVERIES` (due rows, ``SKIP LOCKED``,
leased by pushing their next attempt time forward) and :data:`RECORD_DELIVERIES` (outcomes, the attempt
log, the endpoints' failure clocks, and disabling with its ``WebhookEndpointDisabled`` event).
"""

ENDPOINT_COLUMNS = (
    "id, url, description, event_types, enabled, failing_since, disabled_at, disabled_reason, created_at, updated_at"
)

CREATE_ENDPOINT = f"""
INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types)
VALUES ($1, $2, $3, $4, $5)
RETURNING {ENDPOINT_COLUMNS}
"""

LIST_ENDPOINTS = f"""
SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY created_at, id
"""

GET_ENDPOINT = f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"

# Deleting an endpoint cancels what is still queued for it; its log goes with it.
DELETE_ENDPOINT = """
WITH gone AS (
    DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 RETURNING id
), queued AS (
    DELETE FROM webhook_deliveries d USING gone WHERE d.tenant_id = $1 AND d.endpoint_id = gone.id
)
SELECT count(*) FROM gone
"""

ENABLE_ENDPOINT = f"""
UPDATE webhook_endpoints
SET enabled = true, failing_since = NULL, disabled_at = NULL, disabled_reason = NULL, updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING {ENDPOINT_COLUMNS}
"""

# $1 tenant, $2 endpoint, $3 webhook id, $4 type, $5 body.
QUEUE_PAYLOAD = """
INSERT INTO webhook_deliveries (tenant_id, endpoint_id, url, webhook_id, event_type, payload)
SELECT w.tenant_id, w.id, w.url, $3, $4, $5::jsonb FROM webhook_endpoints w WHERE w.tenant_id = $1 AND w.id = $2
RETURNING id
"""

# Events of a time range queued again for the tenant's enabled endpoints (one, or all) whose filter takes
# them. The webhook id stays the event's, so receivers that keep ids see them as the same events.
REPLAY = """
WITH q AS (
    INSERT INTO webhook_deliveries (tenant_id, endpoint_id, url, webhook_id, event_type, event_id, message_id)
    SELECT e.tenant_id, w.id, w.url, 'evt_' || replace(e.id::text, '-', ''), e.type, e.id, e.message_id
    FROM notification_events e
    JOIN webhook_endpoints w ON w.tenant_id = e.tenant_id AND w.enabled
    WHERE e.tenant_id = $1 AND e.recorded_at >= $2 AND e.recorded_at < $3
      AND ($4::uuid IS NULL OR w.id = $4)
      AND (w.event_types IS NULL OR e.type = ANY (w.event_types))
    ORDER BY e.recorded_at, e.id
    LIMIT $5
    RETURNING 1
)
SELECT count(*) FROM q
"""

DELIVERY_LOG = """
SELECT d.id, d.webhook_id, d.event_type, d.status, d.attempts, d.last_status_code, d.last_error, d.created_at,
       d.next_attempt_at, d.finished_at,
       (SELECT coalesce(json_agg(json_build_object('attempt', a.attempt_no, 'status_code', a.status_code,
                                                   'error', a.error, 'duration_ms', a.duration_ms,
                                                   'at', a.attempted_at) ORDER BY a.attempt_no), '[]'::json)
        FROM webhook_attempts a WHERE a.delivery_id = d.id) AS attempt_rows
FROM webhook_deliveries d
WHERE d.tenant_id = $1 AND d.endpoint_id = $2 AND ($3::bigint IS NULL OR d.id < $3)
ORDER BY d.id DESC
LIMIT $4
"""

CLAIM_DELIVERIES = """
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d
    SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.tenant_id, d.endpoint_id, d.url, d.webhook_id, d.event_type, d.event_id, d.message_id,
              d.payload, d.attempts, d.created_at
)
SELECT c.*, t.slug, w.enabled AS endpoint_enabled, e.meta, e.occurred_at, e.recorded_at,
       m.channel, m.template_id, m.template_version
FROM claimed c
JOIN tenants t ON t.id = c.tenant_id
LEFT JOIN webhook_endpoints w ON w.id = c.endpoint_id
LEFT JOIN notification_events e ON e.id = c.event_id
LEFT JOIN messages m ON m.id = c.message_id
"""

# One statement per batch of outcomes. An endpoint's failure clock starts at its first failure after a
# success and stops at its next success; one still failing once the clock passed $11 seconds is disabled,
# which the tenant's other endpoints hear as WebhookEndpointDisabled (and the audit log records).
RECORD_DELIVERIES = """
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::int[], $6::timestamptz[],
                         $7::uuid[], $8::uuid[], $9::int[], $10::bool[])
    AS r(id, status, status_code, error, duration_ms, next_attempt_at, endpoint_id, tenant_id, attempt_no, ok)
), upd AS (
    UPDATE webhook_deliveries d
    SET status = r.status, next_attempt_at = coalesce(r.next_attempt_at, d.next_attempt_at),
        last_status_code = r.status_code, last_error = r.error,
        finished_at = CASE WHEN r.status = 'pending' THEN NULL ELSE now() END
    FROM r WHERE d.id = r.id
), log AS (
    INSERT INTO webhook_attempts (tenant_id, delivery_id, endpoint_id, attempt_no, status_code, error, duration_ms)
    SELECT r.tenant_id, r.id, r.endpoint_id, r.attempt_no, r.status_code, r.error, r.duration_ms
    FROM r WHERE r.status <> 'cancelled'
), verdict AS (
    SELECT endpoint_id, bool_or(ok) AS ok FROM r
    WHERE endpoint_id IS NOT NULL AND status <> 'cancelled'
    GROUP BY endpoint_id
), ep AS (
    UPDATE webhook_endpoints w
    SET failing_since = CASE WHEN v.ok THEN NULL ELSE coalesce(w.failing_since, now()) END,
        enabled = w.enabled AND (v.ok OR w.failing_since IS NULL
                                 OR w.failing_since > now() - make_interval(secs => $11)),
        disabled_at = CASE WHEN NOT v.ok AND w.enabled AND w.failing_since <= now() - make_interval(secs => $11)
                           THEN now() ELSE w.disabled_at END,
        disabled_reason = CASE WHEN NOT v.ok AND w.enabled
                                    AND w.failing_since <= now() - make_interval(secs => $11)
                               THEN 'failing since ' || w.failing_since::text ELSE w.disabled_reason END,
        updated_at = now()
    FROM verdict v
    WHERE w.id = v.endpoint_id
    RETURNING w.id, w.tenant_id, w.url, w.failing_since, w.enabled, w.disabled_at
), disabled AS (
    SELECT * FROM ep WHERE NOT ep.enabled AND ep.disabled_at = now()
), notice AS (
    INSERT INTO webhook_deliveries (tenant_id, endpoint_id, url, webhook_id, event_type, payload)
    SELECT o.tenant_id, o.id, o.url, 'evt_' || replace(gen_random_uuid()::text, '-', ''), 'WebhookEndpointDisabled',
           jsonb_build_object('type', 'WebhookEndpointDisabled', 'timestamp', now(),
                              'data', jsonb_build_object('endpoint_id', 'ep_' || replace(d.id::text, '-', ''),
                                                         'url', d.url, 'failing_since', d.failing_since,
                                                         'disabled_at', d.disabled_at))
    FROM disabled d
    JOIN webhook_endpoints o ON o.tenant_id = d.tenant_id AND o.enabled AND o.id <> d.id
         AND o.id NOT IN (SELECT id FROM disabled)
         AND (o.event_types IS NULL OR 'WebhookEndpointDisabled' = ANY (o.event_types))
), audit AS (
    INSERT INTO audit_log (tenant_id, actor, action, subject, detail)
    SELECT d.tenant_id, 'herald', 'webhooks.endpoint.disable', 'ep_' || replace(d.id::text, '-', ''),
           jsonb_build_object('failing_since', d.failing_since)
    FROM disabled d
)
SELECT ARRAY(SELECT id FROM disabled) AS disabled
"""
