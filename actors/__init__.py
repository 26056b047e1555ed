"""Ray actors: thin shells that run engine objects in their own processes."""

NAMESPACE = "herald"
METRICS_ACTOR = "herald-metrics"
RELAY_ACTOR = "herald-relay"
FEEDBACK_ACTOR = "herald-feedback"
SENDER_ACTOR_PREFIX = "herald-sender-"
HEALTH_ACTOR = "herald-health"
ROUTING_ACTOR = "herald-routing"
