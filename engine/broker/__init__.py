"""The broker port: queues of message references (ids), never payloads."""

from .base import Broker, BrokerUnavailable, Delivery, Envelope

__all__ = ["Broker", "BrokerUnavailable", "Delivery", "Envelope"]
