-- Sends each provider account accepted per calendar month (UTC), for the routing table's volume price
-- tiers. The provider health actor adds what it counted in one statement per flush and reads the current
-- month back when it starts, so a restart keeps the tier.
CREATE TABLE provider_volumes (
    month      date NOT NULL,                -- the first day of the month
    channel    text NOT NULL,
    provider   text NOT NULL,
    owner      text NOT NULL,                -- 'platform', or the slug of the tenant whose own credentials sent
    sends      bigint NOT NULL CHECK (sends >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, channel, provider, owner)
);
