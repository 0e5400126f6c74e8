"""Table ``sandbox_run``: create, read and move runs through the state machine.

Functions take a connection and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from shared import events, metrics
from shared.states import TERMINAL, RunStatus, can_move, sources_of


@dataclass(frozen=True, slots=True)
class Run:
    """One row of ``sandbox_run``."""

    id: uuid.UUID
    persona_id: uuid.UUID
    method_id: str
    adapter_image: str
    input: dict[str, Any]
    dry_run: bool
    requested_resources: dict[str, Any] | None
    status: RunStatus
    status_reason: str | None
    attempt: int
    lease_owner: str | None
    heartbeat_at: datetime | None
    resources: dict[str, Any] | None
    backend: str | None
    image_digest: str | None
    plan: dict[str, Any] | None
    exit_code: int | None
    oom_killed: bool | None
    wall_timed_out: bool | None
    platform_error: str | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None
    evaluation_raw: str | None
    evaluation: Any
    log_lines: int
    log_bytes: int
    logs_truncated: bool
    logs_preview: dict[str, Any] | None
    result_location: str | None
    queued_at: datetime
    provisioned_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    finalized_at: datetime | None
    updated_at: datetime
    takeovers: int = 0
    deadline_at: datetime | None = None
    raw_lines: dict[str, int] | None = None
    redactions: dict[str, int] | None = None
    cancel_requested_by: str | None = None
    log_stats: dict[str, Any] | None = None
    output_limited: bool = False
    purged_at: datetime | None = None
    # Who to tell about state changes (issue 9): a webhook target and a GitHub commit.
    callback: dict[str, Any] | None = None
    github: dict[str, Any] | None = None
    # What the egress proxy refused (issue 6), redacted; None for a run without network.
    egress: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        """Tell whether the run has reached a final status."""
        return self.status in TERMINAL


_COLUMNS = [f.name for f in fields(Run)]
_SELECT = sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS)
# The hottest statements as ready bytes: composing them per call cost more CPU than running them.
# (Column names come from the Run dataclass, never from input.)
_COLUMN_LIST = ", ".join(f'"{c}"' for c in _COLUMNS)
# The run and its first event in one statement: a submission is one round trip, not two.
# Status and attempt are written, not left to the defaults, because the event states them.
_INSERT_RUN = (
    "WITH run AS (INSERT INTO sandbox_run (id, persona_id, method_id, adapter_image, input, "
    "dry_run, requested_resources, deadline_at, callback, github, status, attempt) VALUES "
    "(%(id)s, %(persona_id)s, %(method_id)s, %(adapter_image)s, %(input)s, %(dry_run)s, "
    "%(requested)s, now() + make_interval(secs => %(deadline)s), %(callback)s, %(github)s, "
    f"%(status)s, 0) RETURNING {_COLUMN_LIST}), "
    "event AS (INSERT INTO outbox (event_id, run_id, kind, payload) "
    "SELECT %(event_id)s, id, %(event_kind)s, %(event)s FROM run) "
    f"SELECT {_COLUMN_LIST} FROM run"
).encode()
_GET_RUN = f"SELECT {_COLUMN_LIST} FROM sandbox_run WHERE id = %s".encode()
# Columns a transition may set besides status; anything else is a programming error.
_SETTABLE = frozenset(_COLUMNS) - {
    "id",
    "persona_id",
    "method_id",
    "adapter_image",
    "input",
    "dry_run",
    "requested_resources",
    "status",
    "queued_at",
    "updated_at",
}
_JSON_COLUMNS = frozenset(
    {
        "resources",
        "plan",
        "evaluation",
        "logs_preview",
        "raw_lines",
        "redactions",
        "log_stats",
        "egress",
    }
)
# The timestamp each status stamps when a run enters it.
_STAMPS: dict[RunStatus, str] = {
    RunStatus.READY: "provisioned_at",
    RunStatus.RUNNING: "started_at",
    RunStatus.FINALIZING: "finished_at",
}


def _row_to_run(row: dict[str, Any]) -> Run:
    row = dict(row)
    row["status"] = RunStatus(row["status"])
    return Run(**row)


def create_run(
    conn: psycopg.Connection[Any],
    *,
    persona_id: uuid.UUID,
    method_id: str,
    adapter_image: str,
    input: dict[str, Any],
    dry_run: bool,
    requested_resources: dict[str, Any] | None = None,
    request_id: str | None = None,
    deadline_s: float | None = None,
    callback: dict[str, Any] | None = None,
    github: dict[str, Any] | None = None,
) -> Run:
    """Insert a queued run and its audit event (same transaction as the caller's)."""
    run_id = uuid.uuid4()
    event = events.payload_of(
        run_id=run_id,
        method_id=method_id,
        persona_id=persona_id,
        status=RunStatus.QUEUED.value,
        previous=None,
        reason=None,
        attempt=0,
    )
    if request_id:
        event["requestId"] = request_id
    row = conn.execute(
        _INSERT_RUN,
        {
            "id": run_id,
            "persona_id": persona_id,
            "method_id": method_id,
            "adapter_image": adapter_image,
            "input": Jsonb(input),
            "dry_run": dry_run,
            "requested": Jsonb(requested_resources) if requested_resources else None,
            "deadline": deadline_s if deadline_s is not None else 3600,
            "callback": Jsonb(callback) if callback else None,
            "github": Jsonb(github) if github else None,
            "status": RunStatus.QUEUED.value,
            "event_id": uuid.uuid4(),
            "event_kind": events.STATE_CHANGED,
            "event": Jsonb(event),
        },
    ).fetchone()
    assert row is not None
    return _row_to_run(row)


def get_run(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> Run | None:
    """Return the run, or None when no run has that id."""
    row = conn.execute(_GET_RUN, (run_id,)).fetchone()
    return _row_to_run(row) if row else None


def transition(
    conn: psycopg.Connection[Any],
    run_id: uuid.UUID,
    to: RunStatus,
    *,
    from_: tuple[RunStatus, ...] | None = None,
    attempt: int | None = None,
    owner: str | None = None,
    bump_attempt: bool = False,
    bump_takeovers: bool = False,
    stale_lease_s: float | None = None,
    deadline_s: float | None = None,
    reason: str | None = None,
    **values: Any,
) -> Run | None:
    """Move a run to ``to`` if it is in one of ``from_`` (and at ``attempt``); write its event.

    This is the only way a status changes. Returns the updated run, or None when the guard
    failed (another worker moved it first, or the attempt is stale): the caller then does nothing.
    ``owner`` also fences on the lease holder. With ``stale_lease_s``, a run that is already
    ``running`` is taken over only when its lease was released or its heartbeat is older than
    that (its executor died). ``deadline_s`` sets the new phase's deadline from the database clock.
    """
    allowed = from_ if from_ is not None else sources_of(to)
    allowed = tuple(s for s in allowed if can_move(s, to))
    if not allowed:
        raise ValueError(f"no status may move to {to}")
    unknown = set(values) - _SETTABLE
    if unknown:
        raise ValueError(f"transition cannot set {sorted(unknown)}")
    params: dict[str, Any] = {
        "to": to.value,
        "reason": reason,
        "id": run_id,
        "allowed": [s.value for s in allowed],
    }
    if to not in TERMINAL and deadline_s is not None:
        params["deadline"] = deadline_s
    for name, value in values.items():
        params[f"v_{name}"] = Jsonb(value) if name in _JSON_COLUMNS and value is not None else value
    if attempt is not None:
        params["attempt"] = attempt
    if owner is not None:
        params["owner"] = owner
    if stale_lease_s is not None:
        params["stale"] = stale_lease_s
    shape = _TransitionShape(
        to,
        bump_attempt,
        bump_takeovers,
        deadline_s is not None,
        tuple(values),
        attempt is not None,
        owner is not None,
        stale_lease_s is not None,
    )
    query = _TRANSITION_SQL.get(shape)
    if query is None:
        # Composing the statement costs more CPU than running it; a process sees few shapes.
        query = _TRANSITION_SQL[shape] = _transition_sql(shape).as_bytes(conn)
    row = conn.execute(query, params).fetchone()
    if row is None:
        return None
    previous = RunStatus(row.pop("previous_status"))
    run = _row_to_run(row)
    if previous != run.status:
        events.add_state_changed(conn, run, previous=previous)
    metrics.safe_observe_transition(previous, run)  # never raises
    return run


@dataclass(frozen=True, slots=True)
class _TransitionShape:
    """What a transition statement's text depends on (its values are parameters)."""

    to: RunStatus
    bump_attempt: bool
    bump_takeovers: bool
    has_deadline: bool
    values: tuple[str, ...]
    has_attempt: bool
    has_owner: bool
    has_stale: bool


_TRANSITION_SQL: dict[_TransitionShape, bytes] = {}


def _transition_sql(shape: _TransitionShape) -> sql.Composed:
    to = shape.to
    assignments: list[sql.Composable] = [
        sql.SQL("status = %(to)s"),
        sql.SQL("updated_at = now()"),
        sql.SQL("status_reason = %(reason)s"),
    ]
    if to in _STAMPS:
        assignments.append(
            sql.SQL("{} = COALESCE({}, now())").format(
                sql.Identifier(_STAMPS[to]), sql.Identifier(_STAMPS[to])
            )
        )
    if to in TERMINAL:
        assignments.append(sql.SQL("finalized_at = now()"))
        assignments.append(sql.SQL("lease_owner = NULL"))
    if shape.bump_attempt:
        assignments.append(sql.SQL("attempt = attempt + 1"))
        assignments.append(sql.SQL("""raw_lines = '{"stdout": 0, "stderr": 0}'"""))
    if shape.bump_takeovers:
        assignments.append(sql.SQL("takeovers = takeovers + 1"))
    if to is RunStatus.RUNNING:
        assignments.append(sql.SQL("heartbeat_at = now()"))
    if to in TERMINAL:
        assignments.append(sql.SQL("deadline_at = NULL"))
    elif shape.has_deadline:
        assignments.append(sql.SQL("deadline_at = now() + make_interval(secs => %(deadline)s)"))
    for name in shape.values:
        assignments.append(
            sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(f"v_{name}"))
        )
    guard = "r.status = ANY(%(allowed)s)"
    if shape.has_attempt:
        guard += " AND r.attempt = %(attempt)s"
    if shape.has_owner:
        guard += " AND r.lease_owner = %(owner)s"
    if shape.has_stale:
        guard += (
            " AND (r.status <> 'running' OR r.heartbeat_at IS NULL"
            " OR r.heartbeat_at < now() - make_interval(secs => %(stale)s))"
        )
    # The CTE reads the status before the update so the event can say where the run came from.
    return sql.SQL(
        "WITH prev AS (SELECT id, status FROM sandbox_run WHERE id = %(id)s FOR UPDATE) "
        "UPDATE sandbox_run r SET {sets} FROM prev WHERE r.id = prev.id AND {guard} "
        "RETURNING prev.status AS previous_status, {cols}"
    ).format(
        sets=sql.SQL(", ").join(assignments),
        guard=sql.SQL(guard),  # type: ignore[arg-type]
        cols=sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in _COLUMNS),
    )


def record_capture(
    conn: psycopg.Connection[Any],
    run_id: uuid.UUID,
    *,
    attempt: int,
    owner: str,
    raw_lines: dict[str, int],
    log_stats: dict[str, Any] | None = None,
) -> bool:
    """Record how many raw lines per stream are stored, if this attempt still owns the run.

    Called in the same transaction as the lines themselves: a stale or cancelled attempt gets
    False and must roll back, so only the current attempt ever writes logs.
    """
    cur = conn.execute(
        "UPDATE sandbox_run SET raw_lines = %s, log_stats = COALESCE(%s, log_stats), "
        "heartbeat_at = now() "
        "WHERE id = %s AND attempt = %s AND lease_owner = %s AND status = 'running'",
        (Jsonb(raw_lines), Jsonb(log_stats) if log_stats else None, run_id, attempt, owner),
    )
    return cur.rowcount == 1


def heartbeat(
    conn: psycopg.Connection[Any], run_id: uuid.UUID, *, attempt: int, owner: str
) -> bool:
    """Renew the executor's lease; return False if this attempt no longer owns the run."""
    cur = conn.execute(
        "UPDATE sandbox_run SET heartbeat_at = now() "
        "WHERE id = %s AND attempt = %s AND lease_owner = %s AND status = 'running'",
        (run_id, attempt, owner),
    )
    return cur.rowcount == 1


def release_lease(conn: psycopg.Connection[Any], run_id: uuid.UUID, *, attempt: int) -> None:
    """Give up the lease of a running attempt so a retry may claim the run at once."""
    conn.execute(
        "UPDATE sandbox_run SET lease_owner = NULL, heartbeat_at = NULL, updated_at = now() "
        "WHERE id = %s AND attempt = %s AND status = 'running'",
        (run_id, attempt),
    )


def list_stale(
    conn: psycopg.Connection[Any], status: RunStatus, older_than_s: float, limit: int = 100
) -> list[Run]:
    """Return runs that have sat in ``status`` for longer than ``older_than_s`` seconds."""
    rows = conn.execute(
        sql.SQL(
            "SELECT {} FROM sandbox_run WHERE status = %s "
            "AND updated_at < now() - make_interval(secs => %s) ORDER BY updated_at LIMIT %s"
        ).format(_SELECT),
        (status.value, older_than_s, limit),
    ).fetchall()
    return [_row_to_run(r) for r in rows]


def list_past_deadline(conn: psycopg.Connection[Any], limit: int = 100) -> list[Run]:
    """Return non-terminal runs whose phase deadline has passed (database clock)."""
    rows = conn.execute(
        sql.SQL(
            "SELECT {} FROM sandbox_run WHERE deadline_at < now() AND status IN "
            "('queued', 'provisioning', 'ready', 'running', 'finalizing') "
            "ORDER BY deadline_at LIMIT %s"
        ).format(_SELECT),
        (limit,),
    ).fetchall()
    return [_row_to_run(r) for r in rows]


def touch(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> None:
    """Mark a run as just looked after (the reconciler re-sent its work)."""
    conn.execute("UPDATE sandbox_run SET updated_at = now() WHERE id = %s", (run_id,))


def live_attempts(conn: psycopg.Connection[Any], run_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Return the current attempt of each run that is not over (absent: over or unknown)."""
    rows = conn.execute(
        "SELECT id, attempt FROM sandbox_run WHERE id = ANY(%s) AND status IN "
        "('queued', 'provisioning', 'ready', 'running', 'finalizing')",
        (run_ids,),
    ).fetchall()
    return {r["id"]: r["attempt"] for r in rows}


def list_purgeable(
    conn: psycopg.Connection[Any], older_than_days: int, limit: int
) -> list[uuid.UUID]:
    """Return runs finished more than ``older_than_days`` ago whose artefacts are still kept."""
    rows = conn.execute(
        "SELECT id FROM sandbox_run WHERE finalized_at < now() - make_interval(days => %s) "
        "AND purged_at IS NULL ORDER BY finalized_at LIMIT %s",
        (older_than_days, limit),
    ).fetchall()
    return [r["id"] for r in rows]


def mark_purged(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> int:
    """Drop a run's stored log lines and preview, record when; return the lines removed."""
    deleted = conn.execute("DELETE FROM sandbox_run_log WHERE run_id = %s", (run_id,)).rowcount
    conn.execute(
        "UPDATE sandbox_run SET purged_at = now(), logs_preview = NULL WHERE id = %s", (run_id,)
    )
    return deleted


def list_dead_leases(
    conn: psycopg.Connection[Any], older_than_s: float, limit: int = 100
) -> list[Run]:
    """Return running runs whose executor stopped heartbeating ``older_than_s`` seconds ago."""
    rows = conn.execute(
        sql.SQL(
            "SELECT {} FROM sandbox_run WHERE status = 'running' "
            "AND COALESCE(heartbeat_at, updated_at) < now() - make_interval(secs => %s) "
            "AND updated_at < now() - make_interval(secs => %s) "
            "ORDER BY updated_at LIMIT %s"
        ).format(_SELECT),
        (older_than_s, older_than_s, limit),
    ).fetchall()
    return [_row_to_run(r) for r in rows]


def list_runs(
    conn: psycopg.Connection[Any],
    *,
    statuses: list[RunStatus] | None = None,
    persona_id: uuid.UUID | None = None,
    method_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    older_than: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 50,
) -> list[Run]:
    """Return runs newest first by ``(queued_at, id)``, filtered; ``older_than`` is the cursor.

    Keyset pagination: pass the last run's ``(queued_at, id)`` to get the page after it.
    """
    where: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {"limit": limit}
    if statuses:
        where.append(sql.SQL("status = ANY(%(statuses)s)"))
        params["statuses"] = [s.value for s in statuses]
    if persona_id is not None:
        where.append(sql.SQL("persona_id = %(persona)s"))
        params["persona"] = persona_id
    if method_id is not None:
        where.append(sql.SQL("method_id = %(method)s"))
        params["method"] = method_id
    if created_after is not None:
        where.append(sql.SQL("queued_at >= %(after)s"))
        params["after"] = created_after
    if created_before is not None:
        where.append(sql.SQL("queued_at < %(before)s"))
        params["before"] = created_before
    if older_than is not None:
        where.append(sql.SQL("(queued_at, id) < (%(c_at)s, %(c_id)s)"))
        params["c_at"], params["c_id"] = older_than
    rows = conn.execute(
        sql.SQL(
            "SELECT {} FROM sandbox_run WHERE {} ORDER BY queued_at DESC, id DESC LIMIT %(limit)s"
        ).format(_SELECT, sql.SQL(" AND ").join(where)),
        params,
    ).fetchall()
    return [_row_to_run(r) for r in rows]
