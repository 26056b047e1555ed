"""Delivery feedback: what providers tell us after a send, and what Herald tells its tenants.

- :mod:`engine.feedback.events`: the one normalized :class:`~engine.feedback.events.DeliveryEvent` every
  provider's webhook parser produces, and the errors a webhook verifier raises;
- :mod:`engine.feedback.effects`: what an event does to a message's status (through the transition table
  of :mod:`engine.states`) and whether it suppresses the address;
- :mod:`engine.feedback.signing`: Standard Webhooks signatures on the events Herald sends out;
- :mod:`engine.feedback.callback_urls`: where Herald may send them (no private or metadata addresses).
"""
