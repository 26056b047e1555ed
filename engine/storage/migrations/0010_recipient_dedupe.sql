-- Recipient dedupe (dedupe.<category>.window_seconds): the first message with a given content hash (tenant,
-- template, channel, recipient, rendered content) holds the claim until its window ends; a later message
-- with the same hash ends `deduplicated` pointing at the holder. Every sender writes its batch's claims in
-- one statement, so two senders agree on who was first. Expired claims are taken over in place and pruned
-- by the senders now and then.
CREATE TABLE dedupe_claims (
    tenant_id    uuid NOT NULL,
    content_hash bytea NOT NULL,
    message_id   uuid NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, content_hash)
);
CREATE INDEX dedupe_claims_expiry ON dedupe_claims (expires_at);

-- The message a deduplicated one was a copy of (GET /api/notifications/{id}: deduplicated_of).
ALTER TABLE messages ADD COLUMN deduplicated_of uuid;
