"""``/api/sandbox/runs/<id>/logs``: a run's redacted output."""

from __future__ import annotations

from typing import Any

from flask_smorest import abort

from services.api.presenters import log_line_json
from services.api.runs import blp, parse_id, runtime
from services.api.schemas import LogsQuerySchema
from shared.db import run_logs
from shared.db import runs as runs_db


@blp.route("/<run_id>/logs", methods=["GET"])
@blp.arguments(LogsQuerySchema, location="query")
@blp.response(200)
def get_logs(query: dict[str, Any], run_id: str) -> Any:
    """Return a page of the run's redacted stdout/stderr lines."""
    rid = parse_id(run_id)
    with runtime().pool.connection() as conn:
        run = runs_db.get_run(conn, rid)
        if run is None:
            abort(404, message=f"no run with id {run_id!r}")
        lines = run_logs.page(
            conn, rid, after=query["after"], limit=query["limit"], stream=query.get("stream")
        )
    next_after = lines[-1].seq if lines else query["after"]
    return {
        "runId": str(rid),
        "status": run.status.value,
        "lines": [log_line_json(ln) for ln in lines],
        "nextAfter": next_after,
        # The client may stop polling: the run is over and this page reached the end.
        "complete": run.terminal and len(lines) < query["limit"],
        "truncated": run.logs_truncated,
    }
