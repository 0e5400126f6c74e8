"""Table ``resource_policy``: resource limit overrides per scope (defaults, method, persona)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

# The limits and the egress switch (issue 6) a row may set; NULL means inherited.
LIMITS = ("cpu", "memory_mb", "timeout_s", "log_cap_mb", "egress")
_COLUMNS = (
    "persona_id, method, cpu, memory_mb, timeout_s, log_cap_mb, egress, updated_by, updated_at"
)
_NIL = "'00000000-0000-0000-0000-000000000000'::uuid"


@dataclass(frozen=True, slots=True)
class PolicyRow:
    """One override: ``method`` None is the defaults row; ``values`` holds only the set limits."""

    persona_id: uuid.UUID | None
    method: str | None
    values: dict[str, Any]
    updated_by: str
    updated_at: datetime

    @property
    def scope(self) -> str:
        if self.method is None:
            return "defaults"
        return "method" if self.persona_id is None else "persona"


def _row(raw: dict[str, Any]) -> PolicyRow:
    return PolicyRow(
        persona_id=raw["persona_id"],
        method=raw["method"],
        values={k: raw[k] for k in LIMITS if raw[k] is not None},
        updated_by=raw["updated_by"],
        updated_at=raw["updated_at"],
    )


def list_rows(conn: psycopg.Connection[Any]) -> list[PolicyRow]:
    """Return every override: the defaults first, then methods, then personas."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM resource_policy "
        "ORDER BY method IS NOT NULL, persona_id IS NOT NULL, persona_id, method"
    ).fetchall()
    return [_row(r) for r in rows]


def get_row(
    conn: psycopg.Connection[Any], persona_id: uuid.UUID | None, method: str | None
) -> PolicyRow | None:
    """Return the override of one scope, or None."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM resource_policy WHERE persona_id IS NOT DISTINCT FROM %s "
        "AND method IS NOT DISTINCT FROM %s",
        (persona_id, method),
    ).fetchone()
    return _row(row) if row else None


def upsert(
    conn: psycopg.Connection[Any],
    persona_id: uuid.UUID | None,
    method: str | None,
    values: dict[str, Any],
    updated_by: str,
) -> tuple[PolicyRow, bool]:
    """Replace one scope's override with ``values``; return it and whether it is new."""
    full = {k: values.get(k) for k in LIMITS}
    row = conn.execute(
        "INSERT INTO resource_policy (persona_id, method, cpu, memory_mb, timeout_s, log_cap_mb, "
        "egress, updated_by) VALUES (%(persona_id)s, %(method)s, %(cpu)s, %(memory_mb)s, "
        "%(timeout_s)s, %(log_cap_mb)s, %(egress)s, %(updated_by)s) ON CONFLICT "
        f"(coalesce(persona_id, {_NIL}), coalesce(method, '')) DO UPDATE SET cpu = EXCLUDED.cpu, "
        "memory_mb = EXCLUDED.memory_mb, timeout_s = EXCLUDED.timeout_s, "
        "log_cap_mb = EXCLUDED.log_cap_mb, egress = EXCLUDED.egress, "
        "updated_by = EXCLUDED.updated_by, updated_at = now() "
        f"RETURNING {_COLUMNS}, (xmax = 0) AS created",
        {**full, "persona_id": persona_id, "method": method, "updated_by": updated_by},
    ).fetchone()
    assert row is not None
    return _row(row), bool(row["created"])


def delete(conn: psycopg.Connection[Any], persona_id: uuid.UUID | None, method: str | None) -> bool:
    """Remove one scope's override; return False if there was none."""
    return (
        conn.execute(
            "DELETE FROM resource_policy WHERE persona_id IS NOT DISTINCT FROM %s "
            "AND method IS NOT DISTINCT FROM %s",
            (persona_id, method),
        ).rowcount
        > 0
    )


def load_overrides(pool: ConnectionPool) -> list[tuple[str | None, str | None, dict[str, Any]]]:
    """Return (persona id, method, values) of every row, for ``shared.policy.CachedPolicy``."""
    with pool.connection() as conn:
        rows = list_rows(conn)
    return [(str(r.persona_id) if r.persona_id else None, r.method, dict(r.values)) for r in rows]
