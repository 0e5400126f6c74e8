"""Periodic work: re-ring the doorbell for runs whose message was lost, and relay the outbox."""

from __future__ import annotations

import logging

from shared.celery_app import send
from shared.db import outbox
from shared.db import runs as runs_db
from shared.queues import TaskNames
from shared.runtime import Runtime
from shared.states import RunStatus

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# Each non-terminal status, the task that moves it on, and how long it may sit before we re-send.
_RESEND: dict[RunStatus, tuple[str, float]] = {
    RunStatus.QUEUED: (TaskNames.PROVISION, 30.0),
    RunStatus.PROVISIONING: (TaskNames.PROVISION, 180.0),
    RunStatus.READY: (TaskNames.EXECUTE, 30.0),
    RunStatus.FINALIZING: (TaskNames.FINALIZE, 60.0),
}
# A running run is only stale once its heartbeat stopped (the executor died).
_RUNNING_STALE_S = 45.0


def reconcile(rt: Runtime) -> dict[str, int]:
    """Re-send work for runs stuck in a status; end runs that keep crashing their executor."""
    counts: dict[str, int] = {}
    with rt.pool.connection() as conn:
        for status, (task, after_s) in _RESEND.items():
            after = rt.settings.queued_resend_after_s if status is RunStatus.QUEUED else after_s
            for run in runs_db.list_stale(conn, status, after):
                send(rt.celery, task, run.id)
                counts[status.value] = counts.get(status.value, 0) + 1
        for run in runs_db.list_dead_leases(conn, _RUNNING_STALE_S):
            if run.attempt >= MAX_ATTEMPTS:
                runs_db.transition(
                    conn,
                    run.id,
                    RunStatus.ERROR,
                    from_=(RunStatus.RUNNING,),
                    attempt=run.attempt,
                    reason=f"max_attempts: the executor died {run.attempt} times",
                )
            else:
                send(rt.celery, TaskNames.EXECUTE, run.id)
            counts["running"] = counts.get("running", 0) + 1
    if counts:
        logger.info("reconciler re-sent work", extra={"counts": counts})
    return counts


def relay_outbox(rt: Runtime, limit: int = 200) -> int:
    """Publish unsent events (to the structured log, the local event sink) and mark them sent."""
    with rt.pool.connection() as conn:
        batch = outbox.claim_batch(conn, limit)
        for event in batch:
            logger.info(
                "event %s",
                event["kind"],
                extra={
                    "eventId": str(event["event_id"]),
                    "runId": str(event["run_id"]),
                    "event": event["payload"],
                },
            )
        outbox.mark_sent(conn, [e["id"] for e in batch])
    return len(batch)
