-- Batches of notifications accepted by POST /api/batch (or read from the ingress queue): the batch's
-- own counts at acceptance, and each message it created names it, so its progress is one indexed count.
CREATE TABLE batches (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    items        integer NOT NULL,          -- items in the request
    accepted     integer NOT NULL,          -- messages this batch created
    replayed     integer NOT NULL,          -- items answered from an earlier use of their key
    rejected     integer NOT NULL,          -- items refused (field errors, key reused with another body)
    created_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz
);
CREATE INDEX batches_tenant_created ON batches (tenant_id, created_at DESC);

ALTER TABLE messages ADD COLUMN batch_id uuid;
CREATE INDEX messages_batch_status ON messages (batch_id, status) WHERE batch_id IS NOT NULL;

-- Per-tenant keys that sign the tenant header of messages on the ingress queue (notifications.ingress).
-- Sealed with the credentials key (engine.credentials.CredentialBox); after a rotation the previous key
-- still verifies until previous_until, so producers can switch at their own pace.
CREATE TABLE ingress_keys (
    tenant_id       uuid PRIMARY KEY REFERENCES tenants (id),
    current_sealed  text NOT NULL,
    previous_sealed text,
    previous_until  timestamptz,
    rotated_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
