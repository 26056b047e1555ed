"""Statements of delivery feedback: provider events in, opens and clicks, retention of raw payloads.

A batch of provider events costs two statements: :data:`RESOLVE` (which messages the events name, with
their status and version) and :data:`INGEST` (status moves, event rows, raw payloads, orphans,
suppressions, engagement and rollups at once, with data-modifying CTEs). The event rows' own trigger
queues them for delivery to the tenant's endpoints in the same statement.
"""

# $1 provider, $2 provider message ids, $3 Herald message ids (aligned; one of the two per key), $4 the
# tenant the request was verified for (NULL: Herald's own provider account, any tenant).
RESOLVE = """
SELECT k.pmid, k.mid, m.id, m.tenant_id, t.slug, m.status, m.version, m.channel, m."to",
       m.metadata->>'category' AS category, m.template_id, m.template_version,
       coalesce(a.provider, m.provider, $1) AS provider, m.created_at
FROM unnest($2::text[], $3::uuid[]) AS k(pmid, mid)
LEFT JOIN LATERAL (
    SELECT a.message_id, a.provider FROM attempts a
    WHERE k.mid IS NULL AND a.provider = $1 AND a.provider_message_id = k.pmid
    ORDER BY a.finished_at DESC
    LIMIT 1
) a ON true
JOIN messages m ON m.id = coalesce(k.mid, a.message_id)
JOIN tenants t ON t.id = m.tenant_id
WHERE $4::uuid IS NULL OR m.tenant_id = $4
"""

_ROLLUP_SUMS = ", ".join(
    f"{c} = r.{c} + EXCLUDED.{c}"
    for c in (
        "delivered",
        "bounced",
        "failed",
        "soft_bounced",
        "complained",
        "unsubscribed",
        "opened",
        "machine_opened",
        "clicked",
    )
)

# Status moves are optimistic: a message whose version changed since RESOLVE is not moved, and none of
# its events are written (the caller reads it again). Events of messages that need no move are written
# whatever their version. Everything else keys off the event rows actually inserted, so a provider event
# delivered twice changes nothing the second time.
INGEST = f"""
WITH ev AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::text[],
                         $13::bool[], $14::text[], $15::text[], $16::text[], $17::text[], $18::int[],
                         $19::int[], $20::int[], $21::date[], $22::text[], $23::text[], $24::int[],
                         $25::text[], $26::text[], $27::text[])
    AS ev(id, tenant_id, message_id, type, meta, dedupe_key, occurred_at, provider, payload, engagement, human,
          agent, moves, suppress_kind, suppress_address, suppress_category, suppress_reason, n_soft, n_complaint,
          n_unsub, day, channel, template_id, template_version, rollup_provider, orphan_reason, doc)
), mv AS (
    SELECT * FROM unnest($28::uuid[], $29::int[], $30::text[], $31::int[], $32::int[], $33::int[], $34::uuid[],
                         $35::date[], $36::text[], $37::text[], $38::int[], $39::text[])
    AS mv(id, expected_version, status, n_delivered, n_bounced, n_failed, tenant_id, day, channel, template_id,
          template_version, provider)
), moved AS (
    UPDATE messages m SET status = mv.status, version = m.version + 1, updated_at = now()
    FROM mv
    WHERE m.id = mv.id AND m.version = mv.expected_version
    RETURNING m.id
), ins AS (
    INSERT INTO notification_events (id, tenant_id, message_id, type, meta, dedupe_key, occurred_at)
    SELECT ev.id, ev.tenant_id, ev.message_id, ev.type, ev.meta::jsonb, ev.dedupe_key, ev.occurred_at
    FROM ev
    WHERE ev.message_id IS NOT NULL AND (NOT ev.moves OR ev.message_id IN (SELECT id FROM moved))
    ON CONFLICT (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
    RETURNING id
), raw AS (
    INSERT INTO provider_event_payloads (event_id, tenant_id, provider, payload)
    SELECT ev.id, ev.tenant_id, ev.provider, ev.payload::jsonb FROM ev JOIN ins ON ins.id = ev.id
), orph AS (
    INSERT INTO orphan_events (id, provider, channel, dedupe_key, reason, event, payload)
    SELECT ev.id, ev.provider, ev.channel, ev.dedupe_key, ev.orphan_reason, ev.doc::jsonb, ev.payload::jsonb
    FROM ev WHERE ev.message_id IS NULL
    ON CONFLICT (provider, dedupe_key) DO NOTHING
    RETURNING id
), sup AS (
    INSERT INTO suppressions (id, tenant_id, kind, address, category, reason)
    SELECT ev.id, ev.tenant_id, ev.suppress_kind, ev.suppress_address, ev.suppress_category, ev.suppress_reason
    FROM ev JOIN ins ON ins.id = ev.id
    WHERE ev.suppress_kind IS NOT NULL
    ORDER BY ev.tenant_id, ev.suppress_kind, ev.suppress_address
    ON CONFLICT (tenant_id, kind, address, category) DO NOTHING
    RETURNING id
), eng_in AS (
    SELECT ev.message_id, ev.engagement AS kind, ev.tenant_id, ev.day, ev.channel, ev.template_id,
           ev.template_version, ev.rollup_provider,
           min(ev.occurred_at) AS first_at, max(ev.occurred_at) AS last_at, count(*)::int AS n,
           (count(*) FILTER (WHERE ev.human))::int AS humans,
           min(ev.occurred_at) FILTER (WHERE ev.human) AS first_human_at,
           (array_agg(ev.agent ORDER BY ev.occurred_at DESC))[1] AS last_agent
    FROM ev JOIN ins ON ins.id = ev.id
    WHERE ev.engagement IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
), eng AS (
    INSERT INTO message_engagement AS g
        (message_id, kind, tenant_id, first_at, last_at, count, human_count, machine_count, first_human_at,
         last_agent)
    SELECT message_id, kind, tenant_id, first_at, last_at, n, humans, n - humans, first_human_at, last_agent
    FROM eng_in
    ORDER BY message_id, kind
    ON CONFLICT (message_id, kind) DO UPDATE
    SET first_at = least(g.first_at, EXCLUDED.first_at), last_at = greatest(g.last_at, EXCLUDED.last_at),
        count = g.count + EXCLUDED.count, human_count = g.human_count + EXCLUDED.human_count,
        machine_count = g.machine_count + EXCLUDED.machine_count,
        first_human_at = least(g.first_human_at, EXCLUDED.first_human_at),
        last_agent = CASE WHEN EXCLUDED.last_at >= g.last_at THEN EXCLUDED.last_agent ELSE g.last_agent END
    RETURNING g.message_id, g.kind, g.human_count, g.machine_count
), firsts AS (
    -- The counters after this statement equal what it added: these are the message's first ones.
    SELECT i.*, (i.humans > 0 AND e.human_count = i.humans) AS first_human,
           (i.n > i.humans AND e.machine_count = i.n - i.humans) AS first_machine
    FROM eng_in i JOIN eng e ON e.message_id = i.message_id AND e.kind = i.kind
), contrib AS (
    SELECT mv.tenant_id, mv.day, mv.channel, mv.template_id, mv.template_version, mv.provider,
           mv.n_delivered AS delivered, mv.n_bounced AS bounced, mv.n_failed AS failed, 0 AS soft_bounced,
           0 AS complained, 0 AS unsubscribed, 0 AS opened, 0 AS machine_opened, 0 AS clicked
    FROM mv JOIN moved ON moved.id = mv.id
    UNION ALL
    SELECT ev.tenant_id, ev.day, ev.channel, ev.template_id, ev.template_version, ev.rollup_provider,
           0, 0, 0, ev.n_soft, ev.n_complaint, ev.n_unsub, 0, 0, 0
    FROM ev JOIN ins ON ins.id = ev.id
    WHERE ev.n_soft + ev.n_complaint + ev.n_unsub > 0
    UNION ALL
    SELECT f.tenant_id, f.day, f.channel, f.template_id, f.template_version, f.rollup_provider,
           0, 0, 0, 0, 0, 0, (f.kind = 'open' AND f.first_human)::int, (f.kind = 'open' AND f.first_machine)::int,
           (f.kind = 'click' AND f.first_human)::int
    FROM firsts f
), roll AS (
    INSERT INTO analytics_daily AS r
        (tenant_id, day, channel, template_id, template_version, provider, delivered, bounced, failed,
         soft_bounced, complained, unsubscribed, opened, machine_opened, clicked)
    SELECT tenant_id, day, channel, template_id, template_version, provider, sum(delivered), sum(bounced),
           sum(failed), sum(soft_bounced), sum(complained), sum(unsubscribed), sum(opened), sum(machine_opened),
           sum(clicked)
    FROM contrib
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2, 3, 4, 5, 6  -- one lock order for every writer of the rollups
    ON CONFLICT (tenant_id, day, channel, template_id, template_version, provider, stripe) DO UPDATE
    SET {_ROLLUP_SUMS}
)
SELECT (SELECT count(*) FROM ins) AS recorded, (SELECT count(*) FROM orph) AS orphans,
       (SELECT count(*) FROM sup) AS suppressed, ARRAY(SELECT id FROM moved) AS moved
"""

RECENT_ORPHANS = """
SELECT id, provider, channel, event, payload FROM orphan_events
WHERE received_at > now() - make_interval(secs => $1)
ORDER BY received_at
LIMIT $2
"""

DELETE_ORPHANS = "DELETE FROM orphan_events WHERE provider = $1 AND dedupe_key = ANY($2::text[])"

PURGE_PAYLOADS = """
DELETE FROM provider_event_payloads WHERE event_id IN (
    SELECT event_id FROM provider_event_payloads
    WHERE received_at < now() - make_interval(days => $1)
    LIMIT $2
)
"""

PURGE_ORPHANS = """
DELETE FROM orphan_events WHERE id IN (
    SELECT id FROM orphan_events WHERE received_at < now() - make_interval(days => $1) LIMIT $2
)
"""

# One open or click from our own tracking (pixel, redirect): engagement counters, the event row (every
# click; an open only when it is the message's first human or first machine one, so a pixel fetched over
# and over does not flood the event log and the endpoints), and the rollups when it is a first.
# $1 message, $2 tenant slug, $3 'open' | 'click', $4 human, $5 agent class, $6 event id, $7 event type,
# $8 meta, $9 record every one.
TRACK = """
WITH tgt AS (
    SELECT m.id, m.tenant_id, (m.created_at AT TIME ZONE 'UTC')::date AS day, m.channel, m.template_id,
           m.template_version, coalesce(m.provider, '') AS provider
    FROM messages m JOIN tenants t ON t.id = m.tenant_id
    WHERE m.id = $1 AND t.slug = $2
), eng AS (
    INSERT INTO message_engagement AS g
        (message_id, kind, tenant_id, first_at, last_at, count, human_count, machine_count, first_human_at,
         last_agent)
    SELECT id, $3::text, tenant_id, now(), now(), 1, $4::bool::int, 1 - $4::bool::int,
           CASE WHEN $4::bool THEN now() END, $5::text
    FROM tgt
    ON CONFLICT (message_id, kind) DO UPDATE
    SET last_at = EXCLUDED.last_at, count = g.count + 1, human_count = g.human_count + EXCLUDED.human_count,
        machine_count = g.machine_count + EXCLUDED.machine_count,
        first_human_at = coalesce(g.first_human_at, EXCLUDED.first_human_at), last_agent = EXCLUDED.last_agent
    RETURNING g.count, g.human_count, g.machine_count
), hit AS (
    SELECT tgt.*, eng.count, ($4::bool AND eng.human_count = 1) AS first_human,
           (NOT $4::bool AND eng.machine_count = 1) AS first_machine
    FROM tgt, eng
), ev AS (
    INSERT INTO notification_events (id, tenant_id, message_id, type, meta)
    SELECT $6, tenant_id, id, $7,
           $8::jsonb || jsonb_build_object('count', count, 'first', first_human OR first_machine)
    FROM hit
    WHERE $9::bool OR first_human OR first_machine
), roll AS (
    INSERT INTO analytics_daily AS r
        (tenant_id, day, channel, template_id, template_version, provider, opened, machine_opened, clicked)
    SELECT tenant_id, day, channel, template_id, template_version, provider,
           ($3::text = 'open' AND first_human)::int, ($3::text = 'open' AND first_machine)::int,
           ($3::text = 'click' AND first_human)::int
    FROM hit
    WHERE first_human OR first_machine
    ON CONFLICT (tenant_id, day, channel, template_id, template_version, provider, stripe) DO UPDATE
    SET opened = r.opened + EXCLUDED.opened, machine_opened = r.machine_opened + EXCLUDED.machine_opened,
        clicked = r.clicked + EXCLUDED.clicked
)
SELECT count(*) FROM hit
"""
