-- Tenant-managed templates: one draft per template id, published versions immutable.
ALTER TABLE tenants ADD COLUMN templates_version integer NOT NULL DEFAULT 0;

CREATE TABLE tenant_templates (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    template_id    text NOT NULL,
    version        integer,                  -- NULL while a draft
    status         text NOT NULL CHECK (status IN ('draft', 'published')),
    manifest       jsonb NOT NULL,
    texts          jsonb NOT NULL,           -- {locale: {part: text}}
    republished_from integer,                -- set when a rollback republished an older version
    created_by     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,
    CHECK ((status = 'draft') = (version IS NULL))
);
CREATE UNIQUE INDEX tenant_templates_version ON tenant_templates (tenant_id, template_id, version)
    WHERE version IS NOT NULL;
CREATE UNIQUE INDEX tenant_templates_draft ON tenant_templates (tenant_id, template_id)
    WHERE status = 'draft';

CREATE FUNCTION herald_published_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'published' THEN
        RAISE EXCEPTION 'published template versions are immutable';
    END IF;
    RETURN coalesce(NEW, OLD);
END $$;
CREATE TRIGGER tenant_templates_immutable BEFORE UPDATE OR DELETE ON tenant_templates
    FOR EACH ROW EXECUTE FUNCTION herald_published_immutable();

-- A tenant's tracked links made with POST /api/shortlinks (not tied to a message).
CREATE TABLE shortlinks (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    url        text NOT NULL,
    clicks     bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shortlinks_tenant ON shortlinks (tenant_id, created_at DESC);
