"""``/api/sandbox/admin/policies``: the resource policy in Postgres, for admins (issue 6).

Resources (each ``GET`` / ``PUT`` / ``DELETE``):

- ``/defaults``: the defaults every run starts from;
- ``/methods/<method>``: a method id or a glob such as ``test.*``;
- ``/personas/<personaId>/methods/<method>``: one persona's override for a method.

``GET /`` lists every override; ``GET /resolve?personaId=&methodId=`` shows the limits a run
would get. A ``PUT`` replaces the scope's override with the limits it names (the others are
inherited); a limit beyond a guardrail is a 422 naming it. Rows override the policy file
(``SANDBOX_POLICY_FILE``), which stays underneath; workers see a change within
``SANDBOX_POLICY_CACHE_TTL_S``.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import g, url_for
from flask_smorest import Blueprint, abort
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from services.api.runs import authenticate, runtime
from shared.db import policies as policies_db
from shared.errors import PolicyViolation
from shared.policy import GUARDRAILS, MINIMUMS, check_override

blp = Blueprint(
    "policies",
    __name__,
    url_prefix="/api/sandbox/admin/policies",
    description="Resource policy overrides in Postgres (admin role).",
)
blp.before_request(authenticate)

METHOD_PATTERN = r"^[a-z0-9_.*?\[\]-]{1,128}$"
_CAMEL = {
    "cpu": "cpu",
    "memoryMb": "memory_mb",
    "timeoutS": "timeout_s",
    "logCapMb": "log_cap_mb",
    "egress": "egress",
}
_SNAKE = {v: k for k, v in _CAMEL.items()}


def _limit_doc(name: str) -> dict[str, Any]:
    low, top = getattr(MINIMUMS, name), getattr(GUARDRAILS, name)
    return {"description": f"{low} to {top} (guardrail); beyond it the request is a 422."}


class _JsonBoolean(fields.Boolean):
    """A JSON true or false only: a switch that opens the network takes no "yes" or 1."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class PolicyLimitsSchema(Schema):
    """Limits of one override; those not given are inherited."""

    class Meta:
        unknown = RAISE

    cpu = fields.Float(metadata=_limit_doc("cpu"))
    memoryMb = fields.Integer(strict=True, metadata=_limit_doc("memory_mb"))
    timeoutS = fields.Integer(strict=True, metadata=_limit_doc("timeout_s"))
    logCapMb = fields.Integer(strict=True, metadata=_limit_doc("log_cap_mb"))
    egress = _JsonBoolean(
        metadata={
            "description": "Network through the run's proxy to SANDBOX_EGRESS_ALLOW_HOSTS "
            "only (default false: no network)."
        },
    )

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("name at least one of cpu, memoryMb, timeoutS, logCapMb, egress")


class PolicyEntrySchema(Schema):
    scope = fields.String(validate=validate.OneOf(["defaults", "method", "persona"]))
    personaId = fields.String(allow_none=True)
    method = fields.String(allow_none=True)
    limits = fields.Nested(PolicyLimitsSchema)
    updatedBy = fields.String()
    updatedAt = fields.String()
    link = fields.String()


class PolicyListSchema(Schema):
    entries = fields.List(fields.Nested(PolicyEntrySchema))
    policyFile = fields.String(allow_none=True)
    guardrails = fields.Dict()
    minimums = fields.Dict()


class ResolveQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    personaId = fields.UUID(required=True)
    methodId = fields.String(required=True, validate=validate.Length(min=1, max=128))


class ResolvedSchema(Schema):
    personaId = fields.String()
    methodId = fields.String()
    resources = fields.Dict()


def _link(persona_id: uuid.UUID | None, method: str | None) -> str:
    if method is None:
        return url_for("policies.defaults")
    if persona_id is None:
        return url_for("policies.method_policy", method=method)
    return url_for("policies.persona_policy", persona_id=str(persona_id), method=method)


def _entry(row: policies_db.PolicyRow) -> dict[str, Any]:
    return {
        "scope": row.scope,
        "personaId": str(row.persona_id) if row.persona_id else None,
        "method": row.method,
        "limits": {_SNAKE[k]: v for k, v in row.values.items()},
        "updatedBy": row.updated_by,
        "updatedAt": row.updated_at.isoformat(),
        "link": _link(row.persona_id, row.method),
    }


def _scope(persona_id: str | None, method: str | None) -> tuple[uuid.UUID | None, str | None]:
    persona = None
    if persona_id is not None:
        try:
            persona = uuid.UUID(persona_id)
        except ValueError:
            abort(404, message=f"no persona {persona_id!r}: persona ids are UUIDs")
    if method is not None and not validate.Regexp(METHOD_PATTERN).regex.match(method):
        abort(404, message="a method is a method id or a glob of [a-z0-9_.*?[]-]")
    return persona, method


def _get(persona_id: str | None, method: str | None) -> Any:
    persona, pattern = _scope(persona_id, method)
    with runtime().pool.connection() as conn:
        row = policies_db.get_row(conn, persona, pattern)
    if row is None:
        abort(404, message="no override for this scope (the file or the defaults apply)")
    return _entry(row)  # type: ignore[union-attr]


def _put(persona_id: str | None, method: str | None, body: dict[str, Any]) -> Any:
    persona, pattern = _scope(persona_id, method)
    values = {_CAMEL[k]: v for k, v in body.items()}
    try:
        check_override(values, "policy override")
    except PolicyViolation as exc:
        field = _SNAKE.get(exc.limit, exc.limit)
        abort(422, message=str(exc), errors={"json": {field: [str(exc)]}})
    rt = runtime()
    with rt.pool.connection() as conn:
        row, created = policies_db.upsert(conn, persona, pattern, values, _caller())
    rt.policy.invalidate()
    return _entry(row), 201 if created else 200


def _delete(persona_id: str | None, method: str | None) -> Any:
    persona, pattern = _scope(persona_id, method)
    rt = runtime()
    with rt.pool.connection() as conn:
        if not policies_db.delete(conn, persona, pattern):
            abort(404, message="no override for this scope")
    rt.policy.invalidate()
    return None


def _caller() -> str:
    return str(g.claims.get("sub", ""))[:255]


@blp.route("", methods=["GET"])
@blp.response(200, PolicyListSchema)
def list_policies() -> Any:
    """List every override stored in Postgres, with the guardrails."""
    rt = runtime()
    with rt.pool.connection() as conn:
        rows = policies_db.list_rows(conn)
    return {
        "entries": [_entry(r) for r in rows],
        "policyFile": str(rt.settings.policy_file) if rt.settings.policy_file else None,
        "guardrails": GUARDRAILS.to_json(),
        "minimums": MINIMUMS.to_json(),
    }


@blp.route("/resolve", methods=["GET"])
@blp.arguments(ResolveQuerySchema, location="query")
@blp.response(200, ResolvedSchema)
def resolve(query: dict[str, Any]) -> Any:
    """Show the limits a run of this persona and method gets (file and overrides merged)."""
    rt = runtime()
    rt.policy.invalidate()  # an admin asking wants what is stored now
    try:
        resources = rt.policy.resolve(str(query["personaId"]), query["methodId"])
    except PolicyViolation as exc:
        abort(422, message=str(exc))
    return {
        "personaId": str(query["personaId"]),
        "methodId": query["methodId"],
        "resources": resources.to_json(),
    }


@blp.route("/defaults", methods=["GET"])
@blp.response(200, PolicyEntrySchema)
@blp.alt_response(404, description="No override of the defaults")
def defaults() -> Any:
    """Return the override of the defaults."""
    return _get(None, None)


@blp.route("/defaults", methods=["PUT"])
@blp.arguments(PolicyLimitsSchema)
@blp.response(200, PolicyEntrySchema)
@blp.alt_response(201, schema=PolicyEntrySchema, description="Created")
def put_defaults(body: dict[str, Any]) -> Any:
    """Set the defaults' override (422 beyond a guardrail)."""
    return _put(None, None, body)


@blp.route("/defaults", methods=["DELETE"])
@blp.response(204)
@blp.alt_response(404, description="No override of the defaults")
def delete_defaults() -> Any:
    """Remove the defaults' override (the file's or built-in defaults apply)."""
    return _delete(None, None)


@blp.route("/methods/<method>", methods=["GET"])
@blp.response(200, PolicyEntrySchema)
@blp.alt_response(404, description="No override for this method")
def method_policy(method: str) -> Any:
    """Return a method's (or glob's) override."""
    return _get(None, method)


@blp.route("/methods/<method>", methods=["PUT"])
@blp.arguments(PolicyLimitsSchema)
@blp.response(200, PolicyEntrySchema)
@blp.alt_response(201, schema=PolicyEntrySchema, description="Created")
def put_method_policy(body: dict[str, Any], method: str) -> Any:
    """Set a method's (or glob's) override (422 beyond a guardrail)."""
    return _put(None, method, body)


@blp.route("/methods/<method>", methods=["DELETE"])
@blp.response(204)
@blp.alt_response(404, description="No override for this method")
def delete_method_policy(method: str) -> Any:
    """Remove a method's override."""
    return _delete(None, method)


@blp.route("/personas/<persona_id>/methods/<method>", methods=["GET"])
@blp.response(200, PolicyEntrySchema)
@blp.alt_response(404, description="No override for this persona and method")
def persona_policy(persona_id: str, method: str) -> Any:
    """Return a persona's override for a method (or glob)."""
    return _get(persona_id, method)


@blp.route("/personas/<persona_id>/methods/<method>", methods=["PUT"])
@blp.arguments(PolicyLimitsSchema)
@blp.response(200, PolicyEntrySchema)
@blp.alt_response(201, schema=PolicyEntrySchema, description="Created")
def put_persona_policy(body: dict[str, Any], persona_id: str, method: str) -> Any:
    """Set a persona's override for a method (422 beyond a guardrail)."""
    return _put(persona_id, method, body)


@blp.route("/personas/<persona_id>/methods/<method>", methods=["DELETE"])
@blp.response(204)
@blp.alt_response(404, description="No override for this persona and method")
def delete_persona_policy(persona_id: str, method: str) -> Any:
    """Remove a persona's override for a method."""
    return _delete(persona_id, method)
