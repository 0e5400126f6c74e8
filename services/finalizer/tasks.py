"""Finalizer and housekeeping tasks: thin wrappers around the logic."""

from __future__ import annotations

import uuid

import psycopg

from services.finalizer.finalize import finalize_run
from services.finalizer.housekeeping import purge_old_artefacts, vacuum_if_unattended
from services.finalizer.housekeeping import reconcile as reconcile_runs
from services.finalizer.housekeeping import relay_outbox as relay
from services.finalizer.worker import app, runtime
from shared.queues import TaskNames


@app.task(
    name=TaskNames.FINALIZE,
    autoretry_for=(psycopg.OperationalError, OSError),
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def finalize(run_id: str) -> None:
    """Judge a finished run, store its artefacts and set its terminal status."""
    finalize_run(runtime, uuid.UUID(run_id))


@app.task(name=TaskNames.RECONCILE, acks_late=False)
def reconcile() -> None:
    """Re-send work for stuck runs (periodic, from celery beat)."""
    reconcile_runs(runtime)


@app.task(name=TaskNames.RETENTION, acks_late=False)
def retention() -> None:
    """Delete logs and results past the retention age (periodic, from celery beat)."""
    purge_old_artefacts(runtime)


@app.task(name=TaskNames.VACUUM, acks_late=False)
def vacuum() -> None:
    """Vacuum the busiest tables when the server does not (periodic, from celery beat)."""
    vacuum_if_unattended(runtime)


@app.task(name=TaskNames.RELAY_OUTBOX, acks_late=False)
def relay_outbox() -> None:
    """Publish unsent events (periodic, from celery beat)."""
    relay(runtime)


@app.task(name=TaskNames.DELIVER_WEBHOOKS, acks_late=False)
def deliver_webhooks() -> None:
    """Send due webhooks and commit statuses (periodic, from celery beat)."""
    from services.finalizer.webhooks import deliver_due

    deliver_due(runtime)
