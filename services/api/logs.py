"""``/api/sandbox/runs/<id>/logs``: a run's redacted output, as a page or as a live stream.

- ``Accept: text/event-stream``: Server-Sent Events; each event's id is the line's sequence, so
  ``Last-Event-ID`` resumes without gaps or repeats.
- ``Accept: application/json``: one page of lines (``after``, ``limit``), for polling clients.
- anything else: NDJSON, one line object per line.
Streams follow the run until it is over (``follow=false``: what exists now), then send a final
``end`` event with the status. History comes from Postgres; live lines from the run's pub/sub
channel, with Postgres polled as a fallback when the channel is quiet.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Response, request
from flask_smorest import abort

from services.api.presenters import log_line_json
from services.api.runs import blp, parse_id, runtime
from services.api.schemas import LogsQuerySchema
from shared import logstream
from shared.db import run_logs
from shared.db import runs as runs_db
from shared.runtime import Runtime

logger = logging.getLogger(__name__)

_PAGE = 1000
_POLL_S = 1.0
_KEEPALIVE_S = 15.0
_MAX_FOLLOW_S = 3600.0


@blp.route("/<run_id>/logs", methods=["GET"])
@blp.arguments(LogsQuerySchema, location="query")
@blp.response(200)
@blp.alt_response(404, description="No run with this id")
def get_logs(query: dict[str, Any], run_id: str) -> Any:
    """Return the run's redacted stdout/stderr lines: a page, an NDJSON or an SSE stream."""
    rid = parse_id(run_id)
    rt = runtime()
    with rt.pool.connection() as conn:
        run = runs_db.get_run(conn, rid)
        if run is None:
            abort(404, message=f"no run with id {run_id!r}")
        explicit = {value for value, quality in request.accept_mimetypes if quality > 0}
        sse = "text/event-stream" in explicit
        if not sse and "application/json" in explicit:
            return _page(conn, run, query)
    after = query["after"]
    if sse and request.headers.get("Last-Event-ID", "").isdigit():
        after = int(request.headers["Last-Event-ID"])
    follow = query.get("follow", True)
    stream = query.get("stream")
    body = _follow(rt, rid, after, stream, follow)
    if sse:
        return Response(
            _as_sse(body),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return Response(
        _as_ndjson(body), mimetype="application/x-ndjson", headers={"Cache-Control": "no-cache"}
    )


def _page(conn: Any, run: runs_db.Run, query: dict[str, Any]) -> dict[str, Any]:
    lines = run_logs.page(
        conn, run.id, after=query["after"], limit=query["limit"], stream=query.get("stream")
    )
    return {
        "runId": str(run.id),
        "status": run.status.value,
        "lines": [log_line_json(ln) for ln in lines],
        "nextAfter": lines[-1].seq if lines else query["after"],
        # The client may stop polling: the run is over and this page reached the end.
        "complete": run.terminal and len(lines) < query["limit"],
        "truncated": run.logs_truncated,
    }


def _follow(
    rt: Runtime, run_id: uuid.UUID, after: int, stream: str | None, follow: bool
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ("line", line) in sequence order, then ("end", status) once the run is over."""
    last = after
    pubsub = rt.pubsub.pubsub(ignore_subscribe_messages=True) if follow else None
    try:
        if pubsub is not None:
            # Subscribe before reading history, so nothing printed in between is missed.
            pubsub.subscribe(logstream.channel(str(run_id)))
        started = time.monotonic()
        last_poll = 0.0
        last_sent = time.monotonic()
        while True:
            terminal = None
            if time.monotonic() - last_poll >= _POLL_S or pubsub is None:
                # The history, and the fallback when live messages were lost: read Postgres.
                with rt.pool.connection() as conn:
                    run = runs_db.get_run(conn, run_id)
                    terminal = run is None or run.terminal
                    while True:
                        lines = run_logs.page(conn, run_id, after=last, limit=_PAGE)
                        for line in lines:
                            last = line.seq
                            if stream in (None, line.stream):
                                yield "line", log_line_json(line)
                                last_sent = time.monotonic()
                        if len(lines) < _PAGE:
                            break
                last_poll = time.monotonic()
                if terminal or not follow or time.monotonic() - started > _MAX_FOLLOW_S:
                    yield "end", _end(run)
                    return
            assert pubsub is not None
            message = pubsub.get_message(timeout=_POLL_S)
            if logstream.is_status(message):
                last_poll = 0.0  # the run moved (perhaps ended): read Postgres now
                continue
            if message and message.get("type") == "message":
                batch = json.loads(message["data"])["lines"]
                if batch and batch[0]["seq"] > last + 1:
                    last_poll = 0.0  # a gap: let Postgres fill it before going on
                    continue
                for line in batch:
                    if line["seq"] > last:
                        last = line["seq"]
                        if stream in (None, line["stream"]):
                            yield "line", line
                            last_sent = time.monotonic()
            if time.monotonic() - last_sent > _KEEPALIVE_S:
                last_sent = time.monotonic()
                yield "keepalive", {}
    finally:
        if pubsub is not None:
            pubsub.close()


def _end(run: runs_db.Run | None) -> dict[str, Any]:
    if run is None:
        return {"status": None}
    return {
        "status": run.status.value,
        "statusReason": run.status_reason,
        "truncated": run.logs_truncated,
    }


def _as_sse(events: Iterator[tuple[str, dict[str, Any]]]) -> Iterator[str]:
    for kind, data in events:
        if kind == "keepalive":
            yield ": keep-alive\n\n"
        elif kind == "line":
            yield f"id: {data['seq']}\nevent: line\ndata: {json.dumps(data)}\n\n"
        else:
            yield f"event: end\ndata: {json.dumps(data)}\n\n"


def _as_ndjson(events: Iterator[tuple[str, dict[str, Any]]]) -> Iterator[str]:
    for kind, data in events:
        if kind == "line":
            yield json.dumps(data) + "\n"
        elif kind == "end":
            yield json.dumps({"event": "end", **data}) + "\n"
