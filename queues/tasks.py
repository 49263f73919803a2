"""django-q2 targets: one line each, calling services. Registered by `setup_schedules`."""

from queues.services import leases_sweep
from queues.services.maintenance import prune, stats_snapshot


def sweep() -> dict:
    """Materialise expired leases (LEASED -> REVIEW / READY)."""
    result = leases_sweep()
    return {"review": result.review, "ready": result.ready, "batches": result.batches}


def snapshot() -> int:
    """Record every queue's depth for the dashboard's chart."""
    return stats_snapshot()


def prune_old() -> dict:
    """Delete what has outlived its retention."""
    return vars(prune())
