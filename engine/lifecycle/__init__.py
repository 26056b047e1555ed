"""The delivery lifecycle after admission, as services the routes call one to one:

- :mod:`.scheduling`: cancel and reschedule one message (``DELETE`` / ``PATCH /api/notifications/{id}``).
- :mod:`.dlq`: dead messages listed and replayed (``GET /admin/dlq``, ``POST /admin/dlq/replay``).
- :mod:`.search`: a tenant's messages by filter, newest first (``GET /api/notifications``).
- :mod:`.queues`: the queues view and gauges (``GET /admin/queues``).
- :mod:`.scope`: who asks (the platform operator, or one tenant's admin).
- :mod:`.services`: all of them on one pool (:class:`Lifecycle`, what the API holds).
"""

from .dlq import DeadFilter, DeadLetterService, DeadPage, ReplayRequest, ReplayResult
from .queues import QueueMonitor, QueuesSnapshot, TenantQueues, TenantQueuesView
from .scheduling import Cancelled, Rescheduled, RescheduleRequest, SchedulingService
from .scope import AdminScope
from .search import MessagePage, MessageSearch, SearchFilters
from .services import Lifecycle

__all__ = [
    "AdminScope",
    "Cancelled",
    "DeadFilter",
    "DeadLetterService",
    "DeadPage",
    "Lifecycle",
    "MessagePage",
    "MessageSearch",
    "QueueMonitor",
    "QueuesSnapshot",
    "ReplayRequest",
    "ReplayResult",
    "RescheduleRequest",
    "Rescheduled",
    "SchedulingService",
    "SearchFilters",
    "TenantQueues",
    "TenantQueuesView",
]
