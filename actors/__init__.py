"""Ray actors: thin shells that run engine objects in their own processes."""

NAMESPACE = "herald"
METRICS_ACTOR = "herald-metrics"
RELAY_ACTOR = "herald-relay"
FEEDBACK_ACTOR = "herald-feedback"
SENDER_ACTOR_PREFIX = "herald-sender-"
#: Dedicated senders of notifications.high (HERALD_HIGH_SENDERS).
HIGH_SENDER_ACTOR_PREFIX = "herald-sender-high-"
HEALTH_ACTOR = "herald-health"
ROUTING_ACTOR = "herald-routing"
INGRESS_ACTOR = "herald-ingress"
