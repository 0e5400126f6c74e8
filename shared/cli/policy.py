"""``sandbox-runner policy list|set|delete``: the resource policy rows in Postgres (issue 6).

Run on a fleet host (the fleet's settings). Scope: no option is the defaults, ``--method`` a
method id or glob, ``--persona`` with ``--method`` one persona's override. Workers see a change
within ``SANDBOX_POLICY_CACHE_TTL_S``; rows override the policy file.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import click

from shared.cli import main
from shared.config import load_settings
from shared.db import make_pool
from shared.db import policies as policies_db
from shared.errors import PolicyViolation
from shared.policy import check_override


def _scope(persona: str | None, method: str | None) -> tuple[uuid.UUID | None, str | None]:
    if persona is not None and method is None:
        raise click.UsageError("--persona needs --method")
    try:
        return (uuid.UUID(persona) if persona else None), method
    except ValueError:
        raise click.BadParameter(f"{persona!r} is not a persona id (UUID)") from None


def _pool() -> Any:
    pool = make_pool(load_settings().database_url, 1)
    pool.open(wait=True, timeout=10)
    return pool


@main.group()
def policy() -> None:
    """Show and change resource policy overrides (Postgres)."""


@policy.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_cmd(as_json: bool) -> None:
    """List every override."""
    pool = _pool()
    try:
        with pool.connection() as conn:
            rows = policies_db.list_rows(conn)
    finally:
        pool.close()
    for row in rows:
        entry = {
            "scope": row.scope,
            "personaId": str(row.persona_id) if row.persona_id else None,
            "method": row.method,
            "limits": row.values,
            "updatedBy": row.updated_by,
            "updatedAt": row.updated_at.isoformat(),
        }
        if as_json:
            click.echo(json.dumps(entry))
        else:
            limits = " ".join(f"{k}={v}" for k, v in row.values.items())
            who = row.persona_id or "-"
            click.echo(f"{row.scope:9} {who!s:36} {row.method or '-':28} {limits}")
    if not rows and not as_json:
        click.echo("no overrides (the policy file and built-in defaults apply)")


@policy.command("set")
@click.option("--persona", default=None, help="Persona id (needs --method).")
@click.option("--method", default=None, help="Method id or glob; omit for the defaults.")
@click.option("--cpu", type=float, default=None)
@click.option("--memory-mb", type=int, default=None)
@click.option("--timeout-s", type=int, default=None)
@click.option("--log-cap-mb", type=int, default=None)
@click.option(
    "--egress/--no-egress",
    default=None,
    help="Allow network through the run's proxy to SANDBOX_EGRESS_ALLOW_HOSTS (or not).",
)
def set_cmd(
    persona: str | None,
    method: str | None,
    cpu: float | None,
    memory_mb: int | None,
    timeout_s: int | None,
    log_cap_mb: int | None,
    egress: bool | None,
) -> None:
    """Replace one scope's override with the limits given (others are inherited)."""
    values = {
        k: v
        for k, v in {
            "cpu": cpu,
            "memory_mb": memory_mb,
            "timeout_s": timeout_s,
            "log_cap_mb": log_cap_mb,
            "egress": egress,
        }.items()
        if v is not None
    }
    if not values:
        raise click.UsageError(
            "give at least one of --cpu --memory-mb --timeout-s --log-cap-mb --egress/--no-egress"
        )
    persona_id, pattern = _scope(persona, method)
    try:
        check_override(values, "policy override")
    except PolicyViolation as exc:
        raise click.ClickException(str(exc)) from None
    who = f"cli:{os.environ.get('USER', 'unknown')}"
    pool = _pool()
    try:
        with pool.connection() as conn:
            _, created = policies_db.upsert(conn, persona_id, pattern, values, who)
    finally:
        pool.close()
    click.echo("created" if created else "updated")


@policy.command("delete")
@click.option("--persona", default=None, help="Persona id (needs --method).")
@click.option("--method", default=None, help="Method id or glob; omit for the defaults.")
def delete_cmd(persona: str | None, method: str | None) -> None:
    """Remove one scope's override."""
    persona_id, pattern = _scope(persona, method)
    pool = _pool()
    try:
        with pool.connection() as conn:
            removed = policies_db.delete(conn, persona_id, pattern)
    finally:
        pool.close()
    if not removed:
        raise click.ClickException("no override for this scope")
    click.echo("deleted")
