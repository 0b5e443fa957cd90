"""``gunicorn -k pushsvc.worker.DrainingWorker``: the documented name of :mod:`pushsvc.server.worker`."""

from __future__ import annotations

from .server.worker import CoalescingResponse, DrainingWorker, use_coalescing_response

__all__ = ["CoalescingResponse", "DrainingWorker", "use_coalescing_response"]
