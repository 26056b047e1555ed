-- In-app notifications: the recipient's inbox, written by the in-app driver through its storage port.
CREATE TABLE inbox_items (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    user_id     text NOT NULL,
    message_id  text NOT NULL,
    title       text,
    body        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    category    text,
    template_id text,
    locale      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    read_at     timestamptz,
    UNIQUE (tenant_id, message_id)
);
CREATE INDEX inbox_user_recent ON inbox_items (tenant_id, user_id, created_at DESC);
