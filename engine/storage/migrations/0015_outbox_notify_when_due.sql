-- The relay's wake-up only for rows due now (or within a second: a time the application computed may be
-- a moment past the transaction's now()). Rows due later wake nobody: the relay's poll finds them when
-- they fall due. Among them are a handed-off one-time code's row, held back while the process that
-- accepted it publishes it itself (engine.handoff): its wake-up would start a relay pass for nothing, and
-- every NOTIFY serializes commits.
CREATE OR REPLACE FUNCTION herald_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows WHERE available_at <= now() + interval '1 second') THEN
        PERFORM pg_notify('herald_outbox', '');
    END IF;
    RETURN NULL;
END $$;
