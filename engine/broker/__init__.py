"""The broker port: queues of message references (ids), never payloads."""

from .base import DLQ_MAX_LENGTH, Broker, BrokerUnavailable, Delivery, Envelope, QueueStats

__all__ = ["DLQ_MAX_LENGTH", "Broker", "BrokerUnavailable", "Delivery", "Envelope", "QueueStats"]
