-- Per-tenant unsubscribe link keys, derived from the signing secret and the generation: a rotation moves
-- the generation and keeps the previous one verifying until previous_until (old links keep working).
-- Generation 0 is the signing secret itself, which signed every link made before this migration.
ALTER TABLE tenants ADD COLUMN unsubscribe_generation integer NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN unsubscribe_previous_until timestamptz;
