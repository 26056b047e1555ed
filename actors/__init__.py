"""Ray actors: thin shells that run engine objects in their own processes."""

NAMESPACE = "herald"
#: The metrics aggregator, routing table, provider health board and governor shard 0 (actors.control).
CONTROL_ACTOR = "herald-control"
RELAY_ACTOR = "herald-relay"
FEEDBACK_ACTOR = "herald-feedback"
SENDER_ACTOR_PREFIX = "herald-sender-"
#: Dedicated senders of notifications.high (HERALD_HIGH_SENDERS).
HIGH_SENDER_ACTOR_PREFIX = "herald-sender-high-"
INGRESS_ACTOR = "herald-ingress"
#: How often a process ships its metrics to the control actor: one Ray call a second, never one per batch
#: (a sender at 100 single-message batches a second made 100 calls, about 1 ms of CPU each end to end).
METRICS_FLUSH_S = 1.0
