"""Run events, written to the outbox in the transaction of the change they describe.

A relay (the beat-driven ``outbox`` task) publishes them at least once; ``eventId`` lets a
consumer drop duplicates.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from shared.redaction import Redactor

if TYPE_CHECKING:
    from shared.db.runs import Run
    from shared.states import RunStatus

STATE_CHANGED = "sandbox.run.state_changed"

_redactor = Redactor()


def state_changed_payload(run: Run, previous: RunStatus | None) -> dict[str, Any]:
    """Build the redacted body of a ``sandbox.run.state_changed`` event."""
    payload = {
        "runId": str(run.id),
        "methodId": run.method_id,
        "personaId": str(run.persona_id),
        "status": run.status.value,
        "previousStatus": previous.value if previous else None,
        "statusReason": run.status_reason,
        "attempt": run.attempt,
    }
    return _redactor.redact_value(payload)  # type: ignore[no-any-return]


def add_state_changed(
    conn: psycopg.Connection[Any],
    run: Run,
    *,
    previous: RunStatus | None,
    request_id: str | None = None,
) -> uuid.UUID:
    """Write a state-changed event for ``run`` to the outbox; return its event id."""
    event_id = uuid.uuid4()
    payload = state_changed_payload(run, previous)
    if request_id:
        payload["requestId"] = request_id
    conn.execute(
        "INSERT INTO outbox (event_id, run_id, kind, payload) VALUES (%s, %s, %s, %s)",
        (event_id, run.id, STATE_CHANGED, Jsonb(payload)),
    )
    return event_id
