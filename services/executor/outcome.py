"""Record what a container did and hand the run to the finalizer: one path for every backend."""

from __future__ import annotations

import logging
from typing import Any

from services.executor.log_capture import LogCapture
from shared import db, dispatch
from shared.db import runs as runs_db
from shared.queues import TaskNames
from shared.runtime import Runtime
from shared.states import RunStatus

logger = logging.getLogger(__name__)


def hand_to_finalizer(
    rt: Runtime, run: runs_db.Run, owner: str, capture: LogCapture, **outcome: Any
) -> runs_db.Run | None:
    """Move the attempt to ``finalizing`` with its outcome and logs, and ring the finalizer.

    ``outcome`` holds the backend's facts (exit_code, oom_killed, wall_timed_out,
    output_limited, and CPU/memory where the backend has them). Returns None when the attempt
    went stale meanwhile (taken over or cancelled): its result is dropped.
    """
    with db.transaction(rt.pool) as conn:
        moved = runs_db.transition(
            conn,
            run.id,
            RunStatus.FINALIZING,
            from_=(RunStatus.RUNNING,),
            attempt=run.attempt,
            owner=owner,
            deadline_s=rt.settings.step_deadline_s,
            evaluation_raw=capture.evaluation_raw,
            log_lines=capture.stored_lines,
            log_bytes=sum(stats.seen for stats in capture.stats.values()),
            logs_truncated=capture.truncated,
            log_stats=capture.log_stats,
            logs_preview=capture.preview,
            redactions=capture.redaction_counts,
            lease_owner=None,
            **outcome,
        )
        queued = dispatch.enqueue(conn, TaskNames.FINALIZE, run.id) if moved else None
    if moved is None or queued is None:
        logger.warning(
            "attempt went stale while running; result dropped",
            extra={"runId": str(run.id), "attempt": run.attempt},
        )
        return None
    dispatch.flush(rt.celery, rt.pool, [queued])
    return moved
