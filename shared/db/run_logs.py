"""Table ``sandbox_run_log``: a run's redacted output lines."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg


@dataclass(frozen=True, slots=True)
class LogLine:
    """One redacted line of a run's stdout or stderr."""

    seq: int
    stream: str
    ts: datetime
    line: str


def append(
    conn: psycopg.Connection[Any], run_id: uuid.UUID, attempt: int, lines: Sequence[LogLine]
) -> None:
    """Store already-redacted lines; a line re-sent with the same seq is ignored."""
    if not lines:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sandbox_run_log (run_id, seq, attempt, stream, ts, line) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, seq) DO NOTHING",
            [(run_id, ln.seq, attempt, ln.stream, ln.ts, ln.line) for ln in lines],
        )


def page(
    conn: psycopg.Connection[Any],
    run_id: uuid.UUID,
    *,
    after: int = 0,
    limit: int = 500,
    stream: str | None = None,
) -> list[LogLine]:
    """Return up to ``limit`` lines with seq greater than ``after``, in order."""
    rows = conn.execute(
        "SELECT seq, stream, ts, line FROM sandbox_run_log "
        "WHERE run_id = %s AND seq > %s AND (%s::text IS NULL OR stream = %s) "
        "ORDER BY seq LIMIT %s",
        (run_id, after, stream, stream, limit),
    ).fetchall()
    return [LogLine(**r) for r in rows]


def all_lines(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> list[LogLine]:
    """Return every stored line of the run, in order."""
    rows = conn.execute(
        "SELECT seq, stream, ts, line FROM sandbox_run_log WHERE run_id = %s ORDER BY seq",
        (run_id,),
    ).fetchall()
    return [LogLine(**r) for r in rows]


def stored_totals(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> tuple[int, int, int]:
    """Return (highest seq, line count, byte count) of the lines stored for a run."""
    row = conn.execute(
        "SELECT COALESCE(max(seq), 0) AS seq, count(*) AS n, "
        "COALESCE(sum(octet_length(line) + 1), 0) AS bytes FROM sandbox_run_log WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    assert row is not None
    return int(row["seq"]), int(row["n"]), int(row["bytes"])


def discard_attempt_lines(conn: psycopg.Connection[Any], run_id: uuid.UUID, attempt: int) -> None:
    """Drop lines written by attempts other than ``attempt`` (a re-run starts clean)."""
    conn.execute(
        "DELETE FROM sandbox_run_log WHERE run_id = %s AND attempt <> %s", (run_id, attempt)
    )
