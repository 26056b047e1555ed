-- The relay's wake-up only when a statement queued outbox rows. A statement trigger fires for every
-- INSERT, none inserted included, and every sender's record statement has an outbox INSERT (for the
-- retries it schedules): each of them notified, and NOTIFY serializes commits (a lock held through the
-- commit's WAL flush), so the burst's records made a one-time code's accept and record wait in line.
CREATE OR REPLACE FUNCTION herald_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows) THEN
        PERFORM pg_notify('herald_outbox', '');
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_outbox_notify();
