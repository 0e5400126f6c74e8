"""``GET /api/sandbox/runs``: list runs with filters and an opaque cursor (newest first)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from flask import url_for
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate

from services.api.runs import blp, runtime
from services.api.schemas import storable_text
from shared.db import runs as runs_db
from shared.states import RunStatus

MAX_LIMIT = 500


class RunListQuerySchema(Schema):
    """Filters and paging of ``GET /api/sandbox/runs``."""

    class Meta:
        unknown = RAISE

    status = fields.List(
        fields.String(validate=validate.OneOf([s.value for s in RunStatus])),
        metadata={"description": "Only runs in these statuses (repeat the parameter)."},
    )
    personaId = fields.UUID()
    methodId = fields.String(validate=[validate.Length(min=1, max=255), storable_text])
    createdAfter = fields.AwareDateTime(
        metadata={"description": "Runs queued at or after this time (ISO 8601 with offset)."}
    )
    createdBefore = fields.AwareDateTime(
        metadata={"description": "Runs queued before this time (ISO 8601 with offset)."}
    )
    cursor = fields.String(
        validate=storable_text, metadata={"description": "nextCursor of the previous page."}
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT))


class RunTimestampsSchema(Schema):
    queued = fields.String()
    provisioned = fields.String(allow_none=True)
    started = fields.String(allow_none=True)
    finished = fields.String(allow_none=True)
    finalized = fields.String(allow_none=True)


class RunSummarySchema(Schema):
    id = fields.String()
    personaId = fields.String()
    methodId = fields.String()
    status = fields.String()
    statusReason = fields.String(allow_none=True)
    attempt = fields.Integer()
    dryRun = fields.Boolean()
    backend = fields.String(allow_none=True)
    timestamps = fields.Nested(RunTimestampsSchema)
    self = fields.String(data_key="link", metadata={"description": "URL of the full run."})


class RunListSchema(Schema):
    runs = fields.List(fields.Nested(RunSummarySchema))
    nextCursor = fields.String(
        allow_none=True, metadata={"description": "Pass as cursor for the next page; null: last."}
    )


def encode_cursor(run: runs_db.Run) -> str:
    raw = json.dumps({"q": run.queued_at.isoformat(), "i": str(run.id)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        return datetime.fromisoformat(data["q"]), uuid.UUID(data["i"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        abort(422, message="cursor is not one this API returned", errors={"cursor": ["invalid"]})
    raise AssertionError("unreachable")


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _summary(run: runs_db.Run) -> dict[str, Any]:
    return {
        "id": str(run.id),
        "personaId": str(run.persona_id),
        "methodId": run.method_id,
        "status": run.status.value,
        "statusReason": run.status_reason,
        "attempt": run.attempt,
        "dryRun": run.dry_run,
        "backend": run.backend,
        "timestamps": {
            "queued": _ts(run.queued_at),
            "provisioned": _ts(run.provisioned_at),
            "started": _ts(run.started_at),
            "finished": _ts(run.finished_at),
            "finalized": _ts(run.finalized_at),
        },
        "self": url_for("runs.get_run", run_id=str(run.id)),
    }


@blp.route("", methods=["GET"])
@blp.arguments(RunListQuerySchema, location="query")
@blp.response(200, RunListSchema)
def list_runs(query: dict[str, Any]) -> Any:
    """List runs, newest first, filtered by status, persona, method and creation time.

    Pages are cut by an opaque cursor over (queued time, id): pass ``nextCursor`` as ``cursor``
    to read the next page; it is null on the last page. ``limit`` defaults to 50, at most 500.
    """
    limit = query["limit"]
    older_than = decode_cursor(query["cursor"]) if query.get("cursor") else None
    with runtime().pool.connection() as conn:
        runs = runs_db.list_runs(
            conn,
            statuses=[RunStatus(s) for s in query.get("status", [])],
            persona_id=query.get("personaId"),
            method_id=query.get("methodId"),
            created_after=query.get("createdAfter"),
            created_before=query.get("createdBefore"),
            older_than=older_than,
            limit=limit + 1,
        )
    page, more = runs[:limit], len(runs) > limit
    return {
        "runs": [_summary(r) for r in page],
        "nextCursor": encode_cursor(page[-1]) if more and page else None,
    }
