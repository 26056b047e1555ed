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
