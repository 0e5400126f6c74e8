"""Operator commands, run on a fleet host: they read Postgres and Redis with the fleet's settings.

``sandbox-runner runs | show <id> | cancel <id> | redrive <id> | stuck | queues``
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import redis

from shared import dispatch
from shared.celery_app import make_celery
from shared.cli import main
from shared.config import Settings, load_settings
from shared.db import make_pool
from shared.db import outbox as outbox_db
from shared.db import runs as runs_db
from shared.metrics import message_age
from shared.queues import Queues, TaskNames
from shared.states import TERMINAL, RunStatus

# The task that moves a run on from each waiting status (what the reconciler re-sends).
NEXT_TASK: dict[RunStatus, str] = {
    RunStatus.QUEUED: TaskNames.PROVISION,
    RunStatus.PROVISIONING: TaskNames.PROVISION,
    RunStatus.READY: TaskNames.EXECUTE,
    RunStatus.RUNNING: TaskNames.EXECUTE,
    RunStatus.FINALIZING: TaskNames.FINALIZE,
}


def _pool(settings: Settings) -> Any:
    pool = make_pool(settings.database_url, 2)
    pool.open(wait=True, timeout=10)
    return pool


def _run_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a run id") from None


def _age(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    seconds = int((now - value).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _print_runs(runs: list[runs_db.Run], as_json: bool) -> None:
    now = datetime.now(UTC)
    if as_json:
        for run in runs:
            click.echo(
                json.dumps(
                    {
                        "id": str(run.id),
                        "status": run.status.value,
                        "methodId": run.method_id,
                        "attempt": run.attempt,
                        "queuedAt": run.queued_at.isoformat(),
                        "updatedAt": run.updated_at.isoformat(),
                        "deadlineAt": run.deadline_at.isoformat() if run.deadline_at else None,
                        "statusReason": run.status_reason,
                    }
                )
            )
        return
    click.echo(f"{'id':36}  {'status':12} {'age':>5} {'idle':>5} {'att':>3}  method")
    for run in runs:
        click.echo(
            f"{run.id}  {run.status.value:12} {_age(run.queued_at, now):>5} "
            f"{_age(run.updated_at, now):>5} {run.attempt:>3}  {run.method_id}"
        )


@main.command("runs")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in RunStatus]),
    help="Only these statuses (repeat).",
)
@click.option("--method", default=None, help="Only this methodId.")
@click.option("--older-than", type=float, default=None, help="Queued more than N seconds ago.")
@click.option("--newer-than", type=float, default=None, help="Queued less than N seconds ago.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def runs_cmd(
    statuses: tuple[str, ...],
    method: str | None,
    older_than: float | None,
    newer_than: float | None,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first, by status, method and age."""
    settings = load_settings()
    now = datetime.now(UTC)
    with _pool(settings) as pool, pool.connection() as conn:
        runs = runs_db.list_runs(
            conn,
            statuses=[RunStatus(s) for s in statuses] or None,
            method_id=method,
            created_before=now - timedelta(seconds=older_than) if older_than else None,
            created_after=now - timedelta(seconds=newer_than) if newer_than else None,
            limit=limit,
        )
    _print_runs(runs, as_json)


@main.command("show")
@click.argument("run_id")
def show(run_id: str) -> None:
    """Show a run and its timeline (its events from the outbox)."""
    settings = load_settings()
    rid = _run_id(run_id)
    with _pool(settings) as pool, pool.connection() as conn:
        run = runs_db.get_run(conn, rid)
        if run is None:
            raise click.ClickException(f"no run {rid}")
        events = outbox_db.events_for_run(conn, rid)
    click.echo(f"run       {run.id}")
    click.echo(f"status    {run.status.value}  {run.status_reason or ''}".rstrip())
    click.echo(f"method    {run.method_id}  persona {run.persona_id}  attempt {run.attempt}")
    click.echo(f"image     {run.adapter_image}  {run.image_digest or ''}".rstrip())
    click.echo(f"backend   {run.backend or '-'}  lease {run.lease_owner or '-'}")
    click.echo(
        f"result    exit {run.exit_code}  oom {run.oom_killed}  timeout {run.wall_timed_out}  "
        f"cpu {run.cpu_seconds}s  peak {run.peak_memory_bytes} B"
    )
    click.echo(f"deadline  {run.deadline_at.isoformat() if run.deadline_at else '-'}")
    click.echo("timeline")
    for event in events:
        payload = event["payload"]
        if event["kind"] == dispatch.DISPATCH:
            what = f"dispatch {payload.get('task')}"
        else:
            what = f"{payload.get('previousStatus') or '-'} -> {payload.get('status')}"
            if payload.get("statusReason"):
                what += f"  ({payload['statusReason']})"
            if payload.get("requestId"):
                what += f"  request {payload['requestId']}"
        sent = "sent" if event["sent_at"] else "unsent"
        click.echo(f"  {event['created_at'].isoformat()}  {what}  [{sent}]")


@main.command("cancel")
@click.argument("run_id")
@click.option("--by", default="operator", show_default=True, help="Who cancels (recorded).")
def cancel(run_id: str, by: str) -> None:
    """Cancel a run through the same repository transition as the API."""
    settings = load_settings()
    rid = _run_id(run_id)
    with _pool(settings) as pool, pool.connection() as conn:
        run = runs_db.get_run(conn, rid)
        if run is None:
            raise click.ClickException(f"no run {rid}")
        if run.status is RunStatus.CANCELLED:
            click.echo(f"{rid} already cancelled")
            return
        moved = runs_db.transition(
            conn,
            rid,
            RunStatus.CANCELLED,
            reason=f"cancelled: by {by}",
            cancel_requested_by=by,
        )
        if moved is None:
            current = runs_db.get_run(conn, rid)
            status = current.status.value if current else "gone"
            raise click.ClickException(f"run already ended {status}; it cannot be cancelled")
    click.echo(f"{rid} cancelled")


@main.command("redrive")
@click.argument("run_id")
def redrive(run_id: str) -> None:
    """Re-dispatch the next step of a stuck run (through the outbox, then published at once)."""
    settings = load_settings()
    rid = _run_id(run_id)
    celery = make_celery("ops", settings)
    with _pool(settings) as pool:
        with pool.connection() as conn:
            run = runs_db.get_run(conn, rid)
            if run is None:
                raise click.ClickException(f"no run {rid}")
            if run.status in TERMINAL:
                raise click.ClickException(f"run is {run.status.value}; nothing to redrive")
            task = NEXT_TASK[run.status]
            runs_db.touch(conn, rid)
            queued = dispatch.enqueue(conn, task, rid)
        published = dispatch.flush(celery, pool, [queued])
    note = "published" if published else "left to the outbox relay (broker unavailable)"
    click.echo(f"{rid} ({run.status.value}): {task} {note}")


@main.command("stuck")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def stuck(as_json: bool) -> None:
    """List runs past their deadline or with a stale executor heartbeat."""
    settings = load_settings()
    with _pool(settings) as pool, pool.connection() as conn:
        late = runs_db.list_past_deadline(conn, limit=500)
        dead = runs_db.list_dead_leases(conn, settings.lease_timeout_s, limit=500)
    seen: set[uuid.UUID] = set()
    runs = []
    for run in [*late, *dead]:
        if run.id not in seen:
            seen.add(run.id)
            runs.append(run)
    if not runs and not as_json:
        click.echo("no stuck runs")
        return
    _print_runs(runs, as_json)


@main.command("queues")
def queues() -> None:
    """Show each queue's depth and the age of its oldest message."""
    settings = load_settings()
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5)
    now = datetime.now(UTC).timestamp()
    click.echo(f"{'queue':12} {'depth':>7} {'oldest':>8}")
    for queue in Queues.all():
        depth = client.llen(queue)
        age = message_age(client.lindex(queue, -1), now)
        click.echo(f"{queue:12} {depth:>7} {age:>7.0f}s")
