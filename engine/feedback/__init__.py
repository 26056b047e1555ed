"""Delivery feedback: what providers tell us after a send, and what Herald tells its tenants.

- :mod:`engine.feedback.events`: the one normalized :class:`~engine.feedback.events.DeliveryEvent` every
  provider's webhook parser produces, and the errors a webhook verifier raises;
- :mod:`engine.feedback.effects`: what an event does to a message's status (through the transition table
  of :mod:`engine.states`) and whether it suppresses the address;
- :mod:`engine.feedback.signing`: Standard Webhooks signatures on the events Herald sends out;
- :mod:`engine.feedback.callback_urls`: where Herald may send them (no private or metadata addresses);
- :mod:`engine.feedback.inbound`: a provider webhook request verified by its receiver (Herald's or the
  ``?tenant=``'s own credentials), then recorded;
- :mod:`engine.feedback.plan` and :mod:`engine.feedback.ingest`: a batch of verified provider events
  recorded in two statements (status moves, dedupe, orphans, raw payloads, suppressions, rollups);
- :mod:`engine.feedback.agents`: machine opens and clicks (Apple's privacy proxy, link scanners);
- :mod:`engine.feedback.endpoints`, :mod:`engine.feedback.signing_keys`, :mod:`engine.feedback.delivery`:
  tenants' webhook endpoints, their ``whsec_`` secrets, and the worker that delivers queued events;
- :mod:`engine.feedback.analytics`: figures from the daily rollups, and the rate gauges;
- :mod:`engine.feedback.maintenance`: orphans matched again, retention, gauges refreshed;
- :mod:`engine.feedback.schemas`: the routes' response models.
"""
