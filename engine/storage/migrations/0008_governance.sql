-- Multi-tenant governance: quota counters and monthly spend reconciled from every replica, API keys
-- with a revocation version, recipients' preferences, and the indexes of the audit and suppression lists.

-- Messages accepted per tenant, channel and UTC calendar window. Each ingress replica counts in memory
-- and adds its counts in one statement per reconcile; warn_token is the reconcile that first reached
-- soft_cap, so one QuotaWarning is raised per window across replicas.
CREATE TABLE quota_counters (
    tenant_id    uuid NOT NULL,
    channel      text NOT NULL,
    period       text NOT NULL CHECK (period IN ('minute', 'day', 'month')),
    window_start timestamptz NOT NULL,
    used         bigint NOT NULL DEFAULT 0,
    soft_cap     bigint,
    warn_token   uuid,
    warned_at    timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel, period, window_start)
);
CREATE INDEX quota_counters_age ON quota_counters (period, window_start);

-- Spend per tenant, channel and UTC calendar month of admission, in the tenant's budgets.currency:
-- reserved holds the estimates of accepted messages not settled yet, spent the actual costs of sent
-- ones. A message's estimate moves out of reserved when it is settled (sent, or ended without a send).
CREATE TABLE budget_spend (
    tenant_id  uuid NOT NULL,
    channel    text NOT NULL,
    month      date NOT NULL,
    reserved   numeric(20, 6) NOT NULL DEFAULT 0,
    spent      numeric(20, 6) NOT NULL DEFAULT 0,
    accepted   bigint NOT NULL DEFAULT 0,
    sent       bigint NOT NULL DEFAULT 0,
    soft_cap   numeric(20, 6),
    warn_token uuid,
    warned_at  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel, month)
);

-- The estimate a message was admitted with, so its settlement takes back exactly that.
ALTER TABLE messages ADD COLUMN estimated_cost numeric(12, 6);

-- API keys: the public prefix finds the row, the secret is kept only as a keyed hash. Revocations are
-- numbered by api_key_state.version in the revoking transaction (its row lock orders them), so a
-- replica that has read version N has seen every revocation up to N.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    prefix       text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL,
    name         text NOT NULL,
    scopes       text[] NOT NULL,
    test_mode    boolean NOT NULL DEFAULT false,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    revoked_version bigint UNIQUE
);
CREATE INDEX api_keys_tenant_recent ON api_keys (tenant_id, created_at, id);

CREATE TABLE api_key_state (
    id      smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO api_key_state (id, version) VALUES (1, 0);

-- A recipient's choices per category and channel ({"marketing": {"email": false}}), by the tenant's
-- user id (to.user_id).
CREATE TABLE recipient_preferences (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    user_id    text NOT NULL,
    categories jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);

-- The suppression list, newest first with (created_at, id) cursors.
CREATE INDEX suppressions_tenant_recent ON suppressions (tenant_id, created_at, id);

-- The audit listing, newest first: a tenant's, a tenant's by action, and the platform's.
CREATE INDEX audit_tenant_recent ON audit_log (tenant_id, created_at, id);
CREATE INDEX audit_tenant_action_recent ON audit_log (tenant_id, action, created_at, id);
CREATE INDEX audit_recent ON audit_log (created_at, id);
DROP INDEX audit_tenant_time;
