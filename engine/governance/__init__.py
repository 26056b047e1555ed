"""Multi-tenant governance: what one tenant may send, how fast, at what cost, with which credentials, and
what its recipients asked for.

- :mod:`.buckets`: token buckets per (tenant, channel), leased in blocks, fair shares of a channel's
  capacity (the governor actor runs one per shard); :mod:`.leases`: the senders' client of it.
- :mod:`.quotas`: per minute / day / month quotas at admission, counted in memory and reconciled.
- :mod:`.budgets`: estimated and actual costs against monthly budgets; :mod:`.usage`: ``GET /api/usage``.
- :mod:`.admission`: quotas and budgets together, as the intake calls them.
- :mod:`.keys`: API keys (create, list, revoke, verify with a revocation snapshot).
- :mod:`.recipients`: preferences, suppression lists, inbound STOP / START / HELP.
- :mod:`.audit`: the audit log's listing.

Nothing here imports Ray; every part takes its clock and storage in its constructor.
"""
