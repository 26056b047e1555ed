-- The tenant config document: the spec's allow-list shape, and a version that moves with every change.

ALTER TABLE tenants ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Every process caches tenant configs by config_version. A writer that changes config or region without
-- moving it (an older process, a credentials save, a hand-written UPDATE) gets it moved here, so no
-- change can stay invisible to the caches; a writer that moved it itself is left alone.
CREATE FUNCTION herald_tenant_config_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.config IS DISTINCT FROM OLD.config OR NEW.region IS DISTINCT FROM OLD.region)
       AND NEW.config_version <= OLD.config_version THEN
        NEW.config_version := OLD.config_version + 1;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tenants_config_version BEFORE UPDATE OF config, region ON tenants
    FOR EACH ROW EXECUTE FUNCTION herald_tenant_config_version();

-- providers.<channel>: [..] (a bare list, the first shape) becomes {"allow": [..]}; an empty list, which
-- narrowed nothing, goes. The trigger above moves config_version of every row rewritten.
UPDATE tenants t
SET config = jsonb_set(t.config, '{providers}', coalesce((
        SELECT jsonb_object_agg(
                   e.key,
                   CASE WHEN jsonb_typeof(e.value) = 'array' THEN jsonb_build_object('allow', e.value) ELSE e.value END)
        FROM jsonb_each(t.config->'providers') e
        WHERE NOT (jsonb_typeof(e.value) = 'array' AND jsonb_array_length(e.value) = 0)
    ), '{}'::jsonb))
WHERE jsonb_typeof(t.config->'providers') = 'object'
  AND EXISTS (SELECT 1 FROM jsonb_each(t.config->'providers') e WHERE jsonb_typeof(e.value) = 'array');
