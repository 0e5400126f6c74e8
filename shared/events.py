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
    return payload_of(
        run_id=run.id,
        method_id=run.method_id,
        persona_id=run.persona_id,
        status=run.status.value,
        previous=previous.value if previous else None,
        reason=run.status_reason,
        attempt=run.attempt,
    )


def payload_of(
    *,
    run_id: uuid.UUID,
    method_id: str,
    persona_id: uuid.UUID,
    status: str,
    previous: str | None,
    reason: str | None,
    attempt: int,
) -> dict[str, Any]:
    """The redacted event body from its fields, for a run not read back yet (its insert)."""
    payload = {
        "runId": str(run_id),
        "methodId": method_id,
        "personaId": str(persona_id),
        "status": status,
        "previousStatus": previous,
        "statusReason": reason,
        "attempt": attempt,
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
