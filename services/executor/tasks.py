"""Executor tasks: thin wrappers that parse the id and call the logic."""

from __future__ import annotations

import uuid

import psycopg

from services.executor.execute import execute_run
from services.executor.worker import app, runtime
from shared.errors import BackendUnavailable
from shared.queues import TaskNames


@app.task(
    name=TaskNames.EXECUTE,
    autoretry_for=(BackendUnavailable, psycopg.OperationalError),
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def execute(run_id: str) -> None:
    """Run the container of a ready run and hand the outcome to the finalizer."""
    execute_run(runtime, uuid.UUID(run_id))
