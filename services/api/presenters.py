"""The camelCase JSON shapes the API returns."""

from __future__ import annotations

from typing import Any

from flask import url_for

from shared.db.run_logs import LogLine
from shared.db.runs import Run


def _ts(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def run_json(run: Run) -> dict[str, Any]:
    """Return the public view of a run (everything in it was redacted before it was stored)."""
    rid = str(run.id)
    return {
        "id": rid,
        "personaId": str(run.persona_id),
        "methodId": run.method_id,
        "adapterImage": run.adapter_image,
        "dryRun": run.dry_run,
        "status": run.status.value,
        "statusReason": run.status_reason,
        "attempt": run.attempt,
        "evaluation": run.evaluation,
        "exitCode": run.exit_code,
        "oomKilled": run.oom_killed,
        "timedOut": run.wall_timed_out,
        "logsPreview": run.logs_preview,
        "redactions": run.redactions or {},
        "takeovers": run.takeovers,
        "resources": run.resources,
        "backend": run.backend,
        "imageDigest": run.image_digest,
        "plan": run.plan if run.dry_run else None,
        # None without network; else what the egress proxy refused (redacted when stored).
        "egress": run.egress,
        "callback": run.callback,  # a URL and a secret *reference*, or an endpoint name
        "github": run.github,
        "logs": {
            "truncated": run.logs_truncated,
            "outputLimited": run.output_limited,
            "streams": run.log_stats or {},
            "purged": run.purged_at is not None,
        },
        "metrics": {
            "cpuSeconds": run.cpu_seconds,
            "peakMemoryBytes": run.peak_memory_bytes,
            "logLines": run.log_lines,
            "logBytes": run.log_bytes,
            "logsTruncated": run.logs_truncated,
        },
        "timestamps": {
            "queued": _ts(run.queued_at),
            "provisioned": _ts(run.provisioned_at),
            "started": _ts(run.started_at),
            "finished": _ts(run.finished_at),
            "finalized": _ts(run.finalized_at),
            "deadline": _ts(run.deadline_at),
        },
        "links": {
            "self": url_for("runs.get_run", run_id=rid),
            "logs": url_for("runs.get_logs", run_id=rid),
            "cancel": url_for("runs.cancel", run_id=rid),
            "deliveries": url_for("deliveries.list_deliveries", run_id=rid),
        },
    }


def log_line_json(line: LogLine) -> dict[str, Any]:
    """Return one log line as the API shows it."""
    return {"seq": line.seq, "stream": line.stream, "ts": line.ts.isoformat(), "line": line.line}
