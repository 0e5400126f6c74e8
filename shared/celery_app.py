"""The Celery application every worker service and the api build the same way."""

from __future__ import annotations

import gc
import logging
import uuid
from typing import Any
from urllib.parse import urlparse

from celery import Celery, Task
from celery.signals import (
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)
from kombu.transport import redis as kombu_redis

from shared import celery_consumer, redis_transport
from shared.config import Settings, load_settings
from shared.errors import RunnerError
from shared.logs import configure_logging
from shared.queues import ROUTES, TaskNames
from shared.runtime import Runtime

logger = logging.getLogger(__name__)


# The longest a task may take: the timeout guardrail plus teardown. The visibility timeout
# (SANDBOX_VISIBILITY_TIMEOUT_S, default three times this) must stay above it, so a message is
# not redelivered while its task still legitimately runs.
LONGEST_TASK_S = 300 + 120


def make_celery(name: str, settings: Settings, task_cls: str | type | None = None) -> Celery:
    """Build a Celery app with the fleet's delivery guarantees; it connects lazily."""
    app = Celery(name, broker=settings.broker_url, task_cls=task_cls)
    if urlparse(settings.broker_url).scheme in ("redis", "rediss"):
        app.conf.broker_transport = redis_transport.NAME
    visibility_s = settings.visibility_timeout_s
    transport = {
        # Redis hands an unacked message to another worker after this: longer than any task.
        "visibility_timeout": visibility_s,
        # A half-open connection must fail, not hang a worker forever (celery#9705).
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 25,
        "retry_on_timeout": True,
    }
    app.conf.update(
        task_routes={task: {"queue": queue} for task, queue in ROUTES.items()},
        task_default_queue="provision",
        # Acknowledge after the task ran, so a dying worker's message comes back; tasks are
        # idempotent (compare-and-set on the run), so a second delivery is harmless.
        task_acks_late=True,
        # A killed pool child must requeue its message, not ack it (celery#1628).
        task_reject_on_worker_lost=True,
        # Reserve one message per process: long tasks must not hold others hostage.
        worker_prefetch_multiplier=1,
        # Postgres holds run state; results in Redis would only expire and eat memory.
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # The visibility timeout must be the same everywhere it is read (celery#7651).
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": visibility_s},
        visibility_timeout=visibility_s,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        # After a broker reconnect, stop late-ack tasks that will be redelivered anyway, rather
        # than run them twice in parallel (celery PR #6654).
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # On SIGTERM, give running tasks a bounded warm phase, then requeue what is unacked.
        worker_soft_shutdown_timeout=20.0,
        worker_enable_soft_shutdown_on_idle=True,
        # Backstop only: the executor enforces the wall limit itself; hard < visibility timeout.
        task_soft_time_limit=LONGEST_TASK_S,
        task_time_limit=LONGEST_TASK_S + 30,
        worker_hijack_root_logger=False,
        # Flower shows tasks from the workers' events; a "sent" event from every publisher
        # as well would cost each hop a Redis publish and Flower a message, for a state
        # ("pending") that the outbox already records.
        worker_send_task_events=True,
        task_send_sent_event=False,
        worker_consumer=celery_consumer.NAME,
        beat_schedule={
            # Periodic messages expire, so a stopped maintenance worker does not find a backlog.
            "reconcile": {
                "task": TaskNames.RECONCILE,
                "schedule": float(settings.sweep_interval_s),
                "options": {"expires": float(settings.sweep_interval_s)},
            },
            # Old logs and results go after SANDBOX_RETENTION_DAYS.
            "retention": {
                "task": TaskNames.RETENTION,
                "schedule": float(settings.retention_interval_s),
                "options": {"expires": float(settings.retention_interval_s)},
            },
            # Only where the server's autovacuum is off (housekeeping.vacuum_if_unattended).
            **(
                {
                    "vacuum": {
                        "task": TaskNames.VACUUM,
                        "schedule": float(settings.vacuum_interval_s),
                        "options": {"expires": float(settings.vacuum_interval_s)},
                    }
                }
                if settings.vacuum_interval_s > 0
                else {}
            ),
            # Short, so a dispatch the broker refused is published soon after it is back.
            "relay-outbox": {
                "task": TaskNames.RELAY_OUTBOX,
                "schedule": 1.0,
                "options": {"expires": 5.0},
            },
            # Due webhook deliveries and commit statuses (scheduled in Postgres, issue 9).
            "deliver-webhooks": {
                "task": TaskNames.DELIVER_WEBHOOKS,
                "schedule": settings.webhook_poll_interval_s,
                "options": {"expires": max(5.0, settings.webhook_poll_interval_s * 2)},
            },
        },
        enable_utc=True,
    )
    return app


class RunTask(Task):  # type: ignore[misc]
    """Base task: when a run's task gives up (retries exhausted), the run ends ``error``."""

    runtime: Runtime

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        from shared.db import runs as runs_db
        from shared.states import TERMINAL, RunStatus

        try:
            run_id = uuid.UUID(str(args[0]))
        except (IndexError, ValueError):
            return
        logger.error(
            "task %s gave up on run %s: %s",
            self.name,
            run_id,
            type(exc).__name__,
            extra={"runId": str(run_id)},
        )
        reason = self.runtime.redactor().redact_text(_failure_reason(exc, self.request.retries))
        with self.runtime.pool.connection() as conn:
            run = runs_db.get_run(conn, run_id)
            if run is None or run.status in TERMINAL:
                return
            runs_db.transition(conn, run_id, RunStatus.ERROR, from_=(run.status,), reason=reason)


def _failure_reason(exc: BaseException, retries: int) -> str:
    if isinstance(exc, RunnerError):
        return f"platform_error: {exc} (after {retries} retries)"
    # Exception text from a library may carry anything; keep only its type.
    return f"platform_error: {type(exc).__name__} (after {retries} retries)"


def make_worker(service: str) -> tuple[Celery, Runtime]:
    """Build the Celery app and runtime of one worker service from the environment."""
    # kombu restores unacked messages when a channel closes; on a channel whose Redis connection
    # was just lost that restore raises (conninfo is gone) and Celery exits the worker with an
    # "Unrecoverable error" (seen in the Redis-outage fault test). Without it, an unacked message
    # waits for the visibility timeout, and the reconciler re-dispatches its run from Postgres
    # long before that.
    kombu_redis.QoS.restore_at_shutdown = False
    settings = load_settings()
    configure_logging(service, settings)
    runtime = Runtime(settings)
    RunTask.runtime = runtime
    app = make_celery(service, settings, task_cls=RunTask)
    runtime.celery = app

    @worker_process_init.connect(weak=False)
    def _after_fork(**_: Any) -> None:
        runtime.reset_after_fork()
        # The loaded code lives as long as the process: keep its ~100,000 objects out of the
        # collector's full passes (25-50 ms each; see the api's gunicorn.conf.py).
        gc.freeze()

    @worker_process_shutdown.connect(weak=False)
    def _on_shutdown(**_: Any) -> None:
        runtime.close()

    @setup_logging.connect(weak=False)
    def _keep_our_logging(**_: Any) -> None:
        # A receiver here stops Celery from reconfiguring logging (its default level is
        # WARNING): every process keeps the JSON handler and SANDBOX_LOG_LEVEL.
        configure_logging(service, settings)

    @worker_ready.connect(weak=False)
    def _serve_metrics(**_: Any) -> None:
        # The main process answers scrapes for the whole service (multiprocess registry).
        from shared import metrics

        port = getattr(settings, f"{service}_metrics_port", 0)
        metrics.start_worker_server(port, settings.metrics_addr)

    return app, runtime


# --- observability: log context and metrics carried by task signals (issue 8) -----------------
_task_started: dict[str, tuple[float, Any]] = {}


@before_task_publish.connect(weak=False)
def _stamp_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Every message carries when it was sent (queue age) and the request that caused it."""
    import time

    from shared.logs import current_context

    if headers is None:
        return
    headers.setdefault("sentAt", time.time())
    request_id = current_context().get("requestId")
    if request_id and "requestId" not in headers:
        headers["requestId"] = request_id


@task_prerun.connect(weak=False)
def _bind_task_context(
    task_id: str | None = None, task: Any = None, args: Any = None, **_: Any
) -> None:
    """Tag every log record of the task with its run, attempt, task and originating request."""
    import time

    from shared.logs import bind_context

    args = list(args or [])
    run_id = str(args[0]) if args else None
    attempt = args[1] if len(args) > 1 and isinstance(args[1], int) else None
    request = getattr(task, "request", None)
    request_id = getattr(request, "requestId", None) or (
        (getattr(request, "headers", None) or {}).get("requestId")
    )
    token = bind_context(
        runId=run_id, attempt=attempt, task=getattr(task, "name", None), requestId=request_id
    )
    if task_id:
        _task_started[task_id] = (time.monotonic(), token)
    if run_id:
        logger.info("task %s started for run %s", getattr(task, "name", "?"), run_id)


@task_postrun.connect(weak=False)
def _end_task_context(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    import time

    from shared import metrics
    from shared.logs import reset_context

    started = _task_started.pop(task_id or "", None)
    reset_context(None)
    try:
        name = getattr(task, "name", "unknown")
        outcome = {"SUCCESS": "succeeded", "RETRY": "retried"}.get(state or "", "failed")
        metrics.TASKS.labels(name, outcome).inc()
        if started is not None:
            metrics.TASK_SECONDS.labels(name).observe(time.monotonic() - started[0])
    except Exception:  # metrics must never fail a task
        logger.exception("could not record task metrics")


@worker_process_shutdown.connect(weak=False)
def _forget_process_metrics(pid: int | None = None, **_: Any) -> None:
    import os

    from shared import metrics

    metrics.mark_process_dead(pid or os.getpid())
