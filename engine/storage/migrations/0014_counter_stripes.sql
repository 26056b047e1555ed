-- Counter rows in stripes. Every sender's record statement adds its batch to the tenant's month of
-- budget_spend and day of analytics_daily, holding those rows' locks until its commit (a WAL flush), so
-- a one-time code's record waited in line behind a burst's 100-message records on the same rows.
-- Writers now add to a stripe of their own (the ingress replicas' reconcile and the feedback ingest
-- stripe 0; a sender 1 + 8 * the batch's priority rank + its connection's pid modulo 8, so high
-- priority never shares a stripe with a burst); readers sum the stripes.
ALTER TABLE budget_spend ADD COLUMN stripe smallint NOT NULL DEFAULT 0;
ALTER TABLE budget_spend DROP CONSTRAINT budget_spend_pkey;
ALTER TABLE budget_spend ADD PRIMARY KEY (tenant_id, channel, month, stripe);

ALTER TABLE analytics_daily ADD COLUMN stripe smallint NOT NULL DEFAULT 0;
ALTER TABLE analytics_daily DROP CONSTRAINT analytics_daily_pkey;
ALTER TABLE analytics_daily ADD PRIMARY KEY (tenant_id, day, channel, template_id, template_version, provider, stripe);
