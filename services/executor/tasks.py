"""Executor tasks: thin wrappers that parse the id and call the logic."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from services.executor import aci_execute
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


@app.task(
    name=TaskNames.ACI_POLL,
    bind=True,
    autoretry_for=(psycopg.OperationalError,),
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def aci_poll(self: Any, run_id: str, attempt: int) -> None:
    """Look at an ACI run's container group once; schedule the next look while it runs."""
    countdown = aci_execute.poll(runtime, uuid.UUID(run_id), int(attempt))
    if countdown is not None:
        # A short countdown (far below the visibility timeout) instead of a worker waiting.
        self.apply_async(args=[run_id, attempt], countdown=countdown)
