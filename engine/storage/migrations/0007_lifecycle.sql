-- Delivery lifecycle: cancel, reschedule and DLQ replay, finding a tenant's messages, queue statistics.
-- Every index that serves a tenant's query has tenant_id first; lists are newest first with
-- (created_at, id) as the cursor, so each filter below is one ordered index range.
-- The messages indexes are built inside this migration's transaction (writes to messages wait meanwhile);
-- on a large live table, build them beforehand with CREATE INDEX CONCURRENTLY under the same names and
-- this migration skips them (IF NOT EXISTS).

-- The category a message was accepted in: metadata.category, else its template manifest's (pinned at
-- admission, like the template version). Rows accepted before this migration are found by
-- metadata.category (the expression indexed below), without rewriting the table.
ALTER TABLE messages ADD COLUMN category text;
-- The provider a DLQ replay named: the next attempts go to it (routing reads it; NULL: normal routing).
ALTER TABLE messages ADD COLUMN pinned_provider text;

DROP INDEX messages_tenant_created;
DROP INDEX messages_tenant_status;
CREATE INDEX IF NOT EXISTS messages_tenant_recent ON messages (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS messages_tenant_status_recent ON messages (tenant_id, status, created_at, id);
CREATE INDEX IF NOT EXISTS messages_tenant_channel_recent ON messages (tenant_id, channel, created_at, id);
CREATE INDEX IF NOT EXISTS messages_tenant_template_recent ON messages (tenant_id, template_id, created_at, id);
CREATE INDEX IF NOT EXISTS messages_tenant_category_recent
    ON messages (tenant_id, (coalesce(category, metadata->>'category')), created_at, id);
CREATE INDEX IF NOT EXISTS messages_tenant_email_recent
    ON messages (tenant_id, (lower("to"->>'email')), created_at, id) WHERE "to" ? 'email';
CREATE INDEX IF NOT EXISTS messages_tenant_phone_recent
    ON messages (tenant_id, ("to"->>'phone'), created_at, id) WHERE "to" ? 'phone';
CREATE INDEX IF NOT EXISTS messages_tenant_user_recent
    ON messages (tenant_id, ("to"->>'user_id'), created_at, id) WHERE "to" ? 'user_id';

-- A message's tags (metadata.tags), one row each, so "the tenant's messages tagged X, newest first" is an
-- ordered index range like the others (a GIN index on the array would have to sort every match).
CREATE TABLE message_tags (
    tenant_id  uuid NOT NULL,
    tag        text NOT NULL,
    created_at timestamptz NOT NULL,   -- the message's, so the cursor is the same
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    PRIMARY KEY (tenant_id, tag, created_at, message_id)
);
CREATE INDEX message_tags_message ON message_tags (message_id);
INSERT INTO message_tags (tenant_id, tag, created_at, message_id)
SELECT DISTINCT m.tenant_id, t.tag, m.created_at, m.id
FROM messages m
CROSS JOIN LATERAL jsonb_array_elements_text(m.metadata->'tags') AS t(tag)
WHERE jsonb_typeof(m.metadata->'tags') = 'array' AND length(t.tag) BETWEEN 1 AND 128;

-- A tenant's scheduled messages whose time has come (its oldest waiting message, in the queues view).
CREATE INDEX IF NOT EXISTS messages_tenant_scheduled ON messages (tenant_id, schedule_at) WHERE status = 'scheduled';

-- The DLQ is the dead messages: newest dead first, per tenant and platform-wide.
CREATE INDEX IF NOT EXISTS messages_dead_tenant ON messages (tenant_id, updated_at, id) WHERE status = 'dead';
CREATE INDEX IF NOT EXISTS messages_dead ON messages (updated_at, id) WHERE status = 'dead';

-- The relay reads due rows priority by priority, oldest first, in index order: rows scheduled for later
-- are never read, however many there are. Cancel, reschedule and replay find a message's rows by id.
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (priority, available_at, id);
CREATE INDEX IF NOT EXISTS outbox_message ON outbox (message_id);

-- Consumers of the Postgres queue announce themselves here (every few seconds while they consume), so
-- the queues view can count them as RabbitMQ does.
CREATE TABLE queue_consumers (
    id        uuid PRIMARY KEY,
    queues    text[] NOT NULL,
    last_seen timestamptz NOT NULL DEFAULT now()
);
