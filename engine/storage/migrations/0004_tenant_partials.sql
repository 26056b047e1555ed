-- A tenant's partials (header/footer per locale), used by the tenant's own templates.
CREATE TABLE tenant_partials (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    locale     text NOT NULL,
    name       text NOT NULL,
    text       text NOT NULL,
    updated_by text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, locale, name)
);
