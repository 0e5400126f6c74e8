"""Finalizing: judge the outcome, keep the artefacts, set the terminal status."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from shared import db, faults
from shared.db import runs as runs_db
from shared.redaction import Redactor
from shared.runtime import Runtime
from shared.states import RunStatus
from shared.storage import run_prefix

logger = logging.getLogger(__name__)

# What the adapter contract says each exit code means (README, "Adapter contract").
EXIT_MEANINGS = {
    1: "the method reported failure",
    2: "the input does not fit the method",
    3: "the image does not provide this method",
}


def judge(run: runs_db.Run) -> tuple[RunStatus, str | None, Any]:
    """Return the terminal status, its reason and the parsed evaluation for a finished container."""
    evaluation, problem = parse_evaluation(run.evaluation_raw)
    if run.platform_error:
        return RunStatus.ERROR, f"platform_error: {run.platform_error}", evaluation
    limits = run.resources or {}
    if run.output_limited:
        return (
            RunStatus.FAILED,
            f"output_limit: the adapter printed more than its log cap of "
            f"{limits.get('logCapMb')} MiB and was stopped",
            evaluation,
        )
    if run.wall_timed_out:
        return (
            RunStatus.TIMED_OUT,
            f"timeout: killed at the wall limit of {limits.get('timeoutS')} s",
            evaluation,
        )
    if run.oom_killed:
        return (
            RunStatus.FAILED,
            f"oom: the adapter exceeded its memory limit of {limits.get('memoryMb')} MiB",
            evaluation,
        )
    if run.exit_code != 0:
        meaning = EXIT_MEANINGS.get(run.exit_code or 0, "the adapter crashed")
        return (
            RunStatus.FAILED,
            f"exit_code: the adapter exited {run.exit_code} ({meaning})",
            evaluation,
        )
    if problem:
        return RunStatus.FAILED, problem, None
    return RunStatus.SUCCEEDED, None, evaluation


def parse_evaluation(raw: str | None) -> tuple[Any, str | None]:
    """Parse the evaluation text; return (value, None) or (None, a reason a person can act on)."""
    if raw is None:
        return None, (
            "evaluation_missing: the adapter exited 0 without printing its evaluation "
            "line (::sandbox-evaluation::{...})"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"evaluation_invalid: not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(value, dict):
        return None, f"evaluation_invalid: expected a JSON object, got {type(value).__name__}"
    return value, None


def _merged(*counts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in counts:
        for kind, n in (part or {}).items():
            total[kind] = total.get(kind, 0) + int(n)
    return total


def finalize_run(rt: Runtime, run_id: uuid.UUID) -> RunStatus | None:
    """Finalize a run whose container finished; return its terminal status, or None if not ours."""
    with rt.pool.connection() as conn:
        run = runs_db.get_run(conn, run_id)
    if run is None or run.status is not RunStatus.FINALIZING:
        return None
    redactor: Redactor = rt.redactor()
    status, reason, evaluation = judge(run)
    evaluation = redactor.redact_value(evaluation) if evaluation is not None else None
    reason = redactor.redact_text(reason) if reason else None
    metrics = {
        "exitCode": run.exit_code,
        "oomKilled": run.oom_killed,
        "timedOut": run.wall_timed_out,
        "cpuSeconds": run.cpu_seconds,
        "peakMemoryBytes": run.peak_memory_bytes,
        "logLines": run.log_lines,
        "logBytes": run.log_bytes,
        "logsTruncated": run.logs_truncated,
        "logStreams": run.log_stats,
        "resources": run.resources,
    }
    result = {
        "runId": str(run_id),
        "status": status.value,
        "statusReason": reason,
        "evaluation": evaluation,
        "metrics": metrics,
    }
    # The logs were appended to blob storage while the run went; these complete the folder.
    # Writing them again after a crash overwrites the same keys with the same content.
    prefix = run_prefix(str(run_id))
    rt.blobs.put(prefix + "result.json", json.dumps(result).encode(), "application/json")
    rt.blobs.put(prefix + "metrics.json", json.dumps(metrics).encode(), "application/json")
    faults.crash_point(rt.settings, "finalize.after_blobs")
    with db.transaction(rt.pool) as conn:
        moved = runs_db.transition(
            conn,
            run_id,
            status,
            from_=(RunStatus.FINALIZING,),
            attempt=run.attempt,
            reason=reason,
            evaluation=evaluation,
            result_location=prefix,
            redactions=_merged(run.redactions, redactor.stats),
        )
    if moved is None:
        return None
    rt.announce_status(str(run_id), moved.status.value)
    logger.info(
        "run finished: %s",
        status.value,
        extra={"runId": str(run_id), "attempt": run.attempt, "status": status.value},
    )
    return moved.status
