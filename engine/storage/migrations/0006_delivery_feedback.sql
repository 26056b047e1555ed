-- Delivery feedback: provider events in (raw payloads, orphans), engagement (opens, clicks), suppression
-- by category, daily analytics rollups, and events out (tenant endpoints, signing secrets, a durable
-- delivery queue with its attempt log).

-- Suppression gets a category: NULL stops every category (a dead address, a complaint), a value only that
-- category (an unsubscribe from the messages it came with).
ALTER TABLE suppressions ADD COLUMN category text;
ALTER TABLE suppressions DROP CONSTRAINT suppressions_tenant_id_kind_address_key;
CREATE UNIQUE INDEX suppressions_address_category ON suppressions (tenant_id, kind, address, category)
    NULLS NOT DISTINCT;

-- The provider's own payload of each recorded event, kept for HERALD_PROVIDER_EVENT_RETENTION_DAYS.
CREATE TABLE provider_event_payloads (
    event_id    uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    provider    text NOT NULL,
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_event_payloads_age ON provider_event_payloads (received_at);

-- Provider events naming no message we know (yet): kept, never an error. "early" ones name a message
-- that is still being sent; both are matched again later and dropped after the retention.
CREATE TABLE orphan_events (
    id          uuid PRIMARY KEY,
    provider    text NOT NULL,
    channel     text NOT NULL,
    dedupe_key  text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('unknown', 'early')),
    event       jsonb NOT NULL,            -- the normalized event
    payload     jsonb NOT NULL,            -- the provider's payload
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, dedupe_key)
);
CREATE INDEX orphan_events_age ON orphan_events (received_at);

-- Opens and clicks per message: first and last time, how many, and how many looked human.
CREATE TABLE message_engagement (
    message_id     uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('open', 'click')),
    tenant_id      uuid NOT NULL,
    first_at       timestamptz NOT NULL,
    last_at        timestamptz NOT NULL,
    count          integer NOT NULL,
    human_count    integer NOT NULL,
    machine_count  integer NOT NULL,
    first_human_at timestamptz,
    last_agent     text,                   -- the user-agent class of the latest one
    PRIMARY KEY (message_id, kind)
);

-- Figures per tenant x day (the message's acceptance day, UTC) x channel x template version x provider,
-- kept up to date by the statements that record sends, provider events, opens and clicks.
CREATE TABLE analytics_daily (
    tenant_id        uuid NOT NULL,
    day              date NOT NULL,
    channel          text NOT NULL,
    template_id      text NOT NULL,
    template_version integer NOT NULL,
    provider         text NOT NULL,        -- '' before any provider took it
    sent             bigint NOT NULL DEFAULT 0,
    delivered        bigint NOT NULL DEFAULT 0,
    bounced          bigint NOT NULL DEFAULT 0,
    soft_bounced     bigint NOT NULL DEFAULT 0,
    complained       bigint NOT NULL DEFAULT 0,
    opened           bigint NOT NULL DEFAULT 0,  -- messages with a human open
    machine_opened   bigint NOT NULL DEFAULT 0,  -- messages whose first open was a proxy or scanner
    clicked          bigint NOT NULL DEFAULT 0,  -- messages with a human click
    failed           bigint NOT NULL DEFAULT 0,
    suppressed       bigint NOT NULL DEFAULT 0,
    expired          bigint NOT NULL DEFAULT 0,
    unsubscribed     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, channel, template_id, template_version, provider)
);

-- A tenant's webhook endpoints. event_types NULL means every type.
CREATE TABLE webhook_endpoints (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    url             text NOT NULL,
    description     text,
    event_types     text[],
    enabled         boolean NOT NULL DEFAULT true,
    failing_since   timestamptz,           -- first failure since the last success
    disabled_at     timestamptz,
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id) WHERE enabled;

-- One signing secret per tenant (sealed), and the previous one while it still signs beside it.
CREATE TABLE webhook_secrets (
    tenant_id       uuid PRIMARY KEY REFERENCES tenants (id),
    current_sealed  text NOT NULL,
    previous_sealed text,
    previous_until  timestamptz,
    rotated_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Events waiting to go out (and what became of them): one row per event and target. webhook_id is the
-- Standard Webhooks id, the same for every target and every retry of one event.
CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    endpoint_id      uuid,                 -- NULL: the message's callback_url
    url              text NOT NULL,
    webhook_id       text NOT NULL,
    event_type       text NOT NULL,
    event_id         uuid,                 -- the notification_events row the body is made from
    message_id       uuid,
    payload          jsonb,                -- the body of events that are no message's (tests, endpoint disabled)
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (tenant_id, endpoint_id, id DESC);

CREATE TABLE webhook_attempts (
    id           bigserial PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    delivery_id  bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    endpoint_id  uuid,
    attempt_no   integer NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  integer NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt_no);

-- Every event row is queued for delivery in the statement that writes it: to the message's callback_url
-- and to each enabled endpoint of the tenant whose filter takes the type. A statement-level trigger over
-- the statement's new rows, so a batch of events costs one INSERT ... SELECT, whichever code wrote them.
CREATE FUNCTION herald_queue_event_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (tenant_id, endpoint_id, url, webhook_id, event_type, event_id, message_id)
    SELECT e.tenant_id, NULL, m.callback_url, 'evt_' || replace(e.id::text, '-', ''), e.type, e.id, e.message_id
    FROM new_events e JOIN messages m ON m.id = e.message_id
    WHERE m.callback_url IS NOT NULL
    UNION ALL
    SELECT e.tenant_id, w.id, w.url, 'evt_' || replace(e.id::text, '-', ''), e.type, e.id, e.message_id
    FROM new_events e JOIN webhook_endpoints w ON w.tenant_id = e.tenant_id AND w.enabled
    WHERE w.event_types IS NULL OR e.type = ANY (w.event_types);
    RETURN NULL;
END $$;
CREATE TRIGGER notification_events_deliveries AFTER INSERT ON notification_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION herald_queue_event_deliveries();

-- Wakes the delivery workers, only when something was queued (NOTIFY serializes commits: not for nothing).
CREATE FUNCTION herald_webhook_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_deliveries) THEN
        PERFORM pg_notify('herald_webhooks', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_deliveries_notify AFTER INSERT ON webhook_deliveries
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION herald_webhook_notify();
