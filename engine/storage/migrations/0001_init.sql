-- Herald schema v1: tenants, messages, attempts, events, attachments, suppressions, outbox,
-- idempotency keys, audit log, and the Postgres queue used when no RabbitMQ is configured.

CREATE TABLE tenants (
    id             uuid PRIMARY KEY,
    slug           text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name           text NOT NULL,
    region         text NOT NULL DEFAULT 'eu',
    config         jsonb NOT NULL DEFAULT '{}'::jsonb,
    config_version integer NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    channel             text NOT NULL,
    template_id         text NOT NULL,
    template_version    integer NOT NULL,
    locale              text NOT NULL,
    requested_locale    text,
    "to"                jsonb NOT NULL,
    variables           jsonb NOT NULL DEFAULT '{}'::jsonb,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    priority            text NOT NULL,
    schedule_at         timestamptz,
    ttl_seconds         integer,
    expires_at          timestamptz,
    idempotency_key     text,
    callback_url        text,
    trace_id            text,
    status              text NOT NULL,
    provider            text,
    provider_message_id text,
    attempts            integer NOT NULL DEFAULT 0,
    claimed_until       timestamptz,
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz
);
CREATE INDEX messages_tenant_created ON messages (tenant_id, created_at DESC);
CREATE INDEX messages_tenant_status ON messages (tenant_id, status);
CREATE INDEX messages_sending_lease ON messages (claimed_until) WHERE status = 'sending';
CREATE INDEX messages_provider_id ON messages (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;

CREATE TABLE attempts (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL,
    message_id          uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    attempt_no          integer NOT NULL,
    provider            text,
    provider_message_id text,
    outcome             text NOT NULL,            -- sent | retry | failed | dead | expired
    error_class         text,
    error_code          text,
    error_detail        text,
    cost_usd            numeric(12, 6),
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempts_tenant_message ON attempts (tenant_id, message_id, attempt_no);
CREATE INDEX attempts_provider_id ON attempts (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;

CREATE TABLE notification_events (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    message_id  uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    type        text NOT NULL,
    meta        jsonb NOT NULL DEFAULT '{}'::jsonb,
    dedupe_key  text,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant_message ON notification_events (tenant_id, message_id, recorded_at);
CREATE UNIQUE INDEX events_dedupe ON notification_events (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL;

CREATE TABLE attachments (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    message_id   uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    storage      text NOT NULL,
    filename     text,
    content_type text,
    size_bytes   integer
);
CREATE INDEX attachments_tenant_message ON attachments (tenant_id, message_id);

CREATE TABLE suppressions (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    kind       text NOT NULL,                     -- email | phone | device_token
    address    text NOT NULL,
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, kind, address)
);

-- Rows waiting to be published: new messages, scheduled ones (available_at in the future),
-- retries after backoff, and dead letters. The relay deletes them once the broker confirmed.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    message_id   uuid NOT NULL,
    queue        text NOT NULL,
    priority     smallint NOT NULL,
    available_at timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due ON outbox (available_at, priority, id);

CREATE FUNCTION herald_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION herald_outbox_notify();

CREATE TABLE idempotency_keys (
    tenant_id    uuid NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    message_id   uuid NOT NULL,
    status_code  integer NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at);

CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    tenant_id  uuid,
    actor      text NOT NULL,
    action     text NOT NULL,
    subject    text,
    detail     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_tenant_time ON audit_log (tenant_id, created_at);

-- Append-only: the audit trail is never rewritten.
CREATE FUNCTION herald_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION herald_audit_append_only();

-- The broker adapter used when AMQP_URL is not set.
CREATE TABLE queue_items (
    id             bigserial PRIMARY KEY,
    queue          text NOT NULL,
    priority       smallint NOT NULL DEFAULT 1,
    body           bytea NOT NULL,
    headers        jsonb NOT NULL DEFAULT '{}'::jsonb,
    visible_at     timestamptz NOT NULL DEFAULT now(),
    delivery_count integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_items_ready ON queue_items (queue, visible_at, id);

CREATE FUNCTION herald_queue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_queue', '');
    RETURN NULL;
END $$;
CREATE TRIGGER queue_items_notify AFTER INSERT ON queue_items
    FOR EACH STATEMENT EXECUTE FUNCTION herald_queue_notify();
