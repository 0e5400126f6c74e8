"""Prometheus metrics of every service: all metric objects are defined here (names ``sandbox_``).

Services run under gunicorn and Celery prefork, so the client runs in multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set (the start scripts set one directory per service and empty it
at start): counters and histograms are written to per-process files and summed by the process
that answers the scrape (the api's ``/metrics``, a worker's main process on its metrics port).

Who observes what:

* run outcomes, phase durations, CPU, memory, OOMs, timeouts and redactions: ``observe_transition``,
  called by ``shared.db.runs.transition`` when a run reaches a terminal status, in whichever
  process made that transition (api for a cancel, a worker otherwise);
* API requests: the api's before/after request hooks;
* Celery tasks: task signals in ``shared.celery_app``;
* queue depth and age, runs per status, runs past their deadline, the outbox backlog:
  ``FleetCollector``, read from Redis and Postgres at scrape time; only the api registers it,
  so the fleet is counted once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The client's own variable (not a SANDBOX_ setting): it must name an existing directory before
# the first metric is created, so make sure it exists before anything below runs.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from shared.db.runs import Run
    from shared.states import RunStatus

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: from a dry run's few milliseconds to the 300 s wall guardrail plus queueing.
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_MIB = 1024 * 1024
_MEMORY_BUCKETS = tuple(m * _MIB for m in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096))

WEBHOOK_DELIVERIES = Counter(
    "sandbox_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, failed, retried, gave_up).",
    ["outcome"],
)

RUNS = Counter(
    "sandbox_runs",
    "Runs that reached a terminal status, by status, method and backend.",
    ["status", "method", "backend"],
)
PHASE_SECONDS = Histogram(
    "sandbox_run_phase_seconds",
    "Time a run spent per phase, observed at its terminal transition from its timestamps: "
    "queue_wait = provisioned - queued (waiting for and doing provisioning), "
    "provision = started - provisioned (plan ready until the executor claimed it), "
    "execute = finished - started, finalize = finalized - finished.",
    ["phase"],
    buckets=_DURATION_BUCKETS,
)
RUN_SECONDS = Histogram(
    "sandbox_run_seconds",
    "Time from queued to terminal, by terminal status.",
    ["status"],
    buckets=_DURATION_BUCKETS,
)
CPU_SECONDS = Histogram(
    "sandbox_run_cpu_seconds",
    "CPU seconds a run's container used (runs that started a container).",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600),
)
PEAK_MEMORY = Histogram(
    "sandbox_run_peak_memory_bytes",
    "Peak memory of a run's container (runs that started a container).",
    buckets=_MEMORY_BUCKETS,
)
OOMS = Counter("sandbox_run_oom_kills", "Runs whose container was OOM-killed.", ["method"])
TIMEOUTS = Counter("sandbox_run_timeouts", "Runs killed at their wall-time limit.", ["method"])
REDACTIONS = Counter(
    "sandbox_redactions",
    "Values masked in run output, by detector kind (counted at the run's terminal transition).",
    ["kind"],
)
API_REQUESTS = Counter(
    "sandbox_api_requests",
    "API requests by route template, HTTP method and status code.",
    ["route", "method", "status"],
)
API_LATENCY = Histogram(
    "sandbox_api_request_duration_seconds",
    "API request latency by route template and HTTP method.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
TASKS = Counter(
    "sandbox_celery_tasks",
    "Celery tasks finished in a worker, by task name and outcome (succeeded, failed, retried).",
    ["task", "outcome"],
)
TASK_SECONDS = Histogram(
    "sandbox_celery_task_duration_seconds",
    "Celery task run time in a worker, by task name.",
    ["task"],
    buckets=_DURATION_BUCKETS,
)

# Gauges read at scrape time by FleetCollector (documented here so dashboards and alerts can be
# checked against one list of names).
FLEET_GAUGES: dict[str, str] = {
    "sandbox_queue_depth": "Messages waiting in a Celery queue (Redis LLEN).",
    "sandbox_queue_oldest_message_age_seconds": (
        "Age of the oldest message waiting in a Celery queue, from its sentAt header "
        "(0 when the queue is empty)."
    ),
    "sandbox_outbox_unsent": "Dispatch rows of the outbox not yet published to the broker.",
    "sandbox_outbox_oldest_unsent_age_seconds": (
        "Age of the oldest dispatch row not yet published (0 when none)."
    ),
    "sandbox_runs_in_status": "Runs currently in each non-terminal status.",
    "sandbox_runs_oldest_in_status_seconds": (
        "How long the longest-waiting run has sat in each non-terminal status (since updated_at)."
    ),
    "sandbox_runs_past_deadline": "Non-terminal runs past their phase deadline (deadline_at).",
    "sandbox_runs_stale_heartbeat": "Running runs with a heartbeat older than the lease.",
    "sandbox_fleet_collector_up": "1 when the last scrape read Redis and Postgres, else 0.",
}

_NON_TERMINAL = ("queued", "provisioning", "ready", "running", "finalizing")


def all_metric_names() -> set[str]:
    """Return every exposed sample family name (counters with ``_total``, histogram series)."""
    names: set[str] = set(FLEET_GAUGES)
    for value in list(globals().values()):
        if isinstance(value, Counter):
            names.add(value._name + "_total")
        elif isinstance(value, Histogram):
            base = value._name
            names |= {base + "_bucket", base + "_sum", base + "_count"}
    return names


def _seconds(later: Any, earlier: Any) -> float | None:
    if later is None or earlier is None:
        return None
    return max(0.0, (later - earlier).total_seconds())


def observe_transition(previous: RunStatus | None, run: Run) -> None:
    """Record what a status change tells about a run; only terminal transitions count."""
    if not run.terminal or previous == run.status:
        return
    method = run.method_id
    RUNS.labels(run.status.value, method, run.backend or "none").inc()
    phases = {
        "queue_wait": _seconds(run.provisioned_at, run.queued_at),
        "provision": _seconds(run.started_at, run.provisioned_at),
        "execute": _seconds(run.finished_at, run.started_at),
        "finalize": _seconds(run.finalized_at, run.finished_at),
    }
    for phase, seconds in phases.items():
        if seconds is not None:
            PHASE_SECONDS.labels(phase).observe(seconds)
    total = _seconds(run.finalized_at, run.queued_at)
    if total is not None:
        RUN_SECONDS.labels(run.status.value).observe(total)
    if run.cpu_seconds is not None:
        CPU_SECONDS.observe(run.cpu_seconds)
    if run.peak_memory_bytes is not None:
        PEAK_MEMORY.observe(run.peak_memory_bytes)
    if run.oom_killed:
        OOMS.labels(method).inc()
    if run.wall_timed_out or run.status.value == "timed_out":
        TIMEOUTS.labels(method).inc()
    for kind, count in (run.redactions or {}).items():
        if isinstance(count, int) and count > 0:
            REDACTIONS.labels(str(kind)).inc(count)


def safe_observe_transition(previous: RunStatus | None, run: Run) -> None:
    """``observe_transition`` that never raises: a metrics bug must not break a transition."""
    try:
        observe_transition(previous, run)
        # A task's log context learns the run's attempt once the task has moved the run.
        from shared.logs import bind_context, current_context

        if current_context().get("runId") == str(run.id):
            bind_context(attempt=run.attempt)
    except Exception:
        logger.exception("could not record metrics for run %s", run.id)


class FleetCollector(Collector):
    """Gauges of the whole fleet, read from Redis and Postgres when scraped.

    ``redis_client`` returns a redis client; ``connection`` returns a context manager yielding a
    psycopg connection with dict rows. Queue age comes from the ``sentAt`` header every message
    carries (set in ``before_task_publish``); a message without it (sent by an older publisher)
    is counted in the depth but gives no age.
    """

    def __init__(
        self,
        redis_client: Callable[[], Any],
        connection: Callable[[], Any],
        queues: list[str],
        lease_timeout_s: float,
    ) -> None:
        self._redis = redis_client
        self._connection = connection
        self._queues = queues
        self._lease_timeout_s = lease_timeout_s

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        ok = 1.0
        try:
            yield from self._queue_metrics()
        except Exception as exc:
            logger.warning("queue metrics unavailable: %s", type(exc).__name__)
            ok = 0.0
        try:
            yield from self._database_metrics()
        except Exception as exc:
            logger.warning("run metrics unavailable: %s", type(exc).__name__)
            ok = 0.0
        up = GaugeMetricFamily(
            "sandbox_fleet_collector_up", FLEET_GAUGES["sandbox_fleet_collector_up"]
        )
        up.add_metric([], ok)
        yield up

    def _queue_metrics(self) -> Iterator[Any]:
        client = self._redis()
        depth = GaugeMetricFamily(
            "sandbox_queue_depth", FLEET_GAUGES["sandbox_queue_depth"], labels=["queue"]
        )
        age = GaugeMetricFamily(
            "sandbox_queue_oldest_message_age_seconds",
            FLEET_GAUGES["sandbox_queue_oldest_message_age_seconds"],
            labels=["queue"],
        )
        now = time.time()
        for queue in self._queues:
            depth.add_metric([queue], float(client.llen(queue)))
            # kombu pushes on the left and pops on the right: the oldest message is the last.
            oldest = client.lindex(queue, -1)
            age.add_metric([queue], message_age(oldest, now))
        yield depth
        yield age

    def _database_metrics(self) -> Iterator[Any]:
        with self._connection() as conn:
            outbox = conn.execute(
                "SELECT count(*) AS n, "
                "COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS age "
                "FROM outbox WHERE sent_at IS NULL AND kind = 'sandbox.dispatch'"
            ).fetchone()
            statuses = conn.execute(
                "SELECT status, count(*) AS n, "
                "EXTRACT(EPOCH FROM now() - min(updated_at)) AS age "
                "FROM sandbox_run WHERE status = ANY(%s) GROUP BY status",
                (list(_NON_TERMINAL),),
            ).fetchall()
            late = conn.execute(
                "SELECT count(*) FILTER (WHERE deadline_at < now()) AS past_deadline, "
                "count(*) FILTER (WHERE status = 'running' AND "
                "COALESCE(heartbeat_at, updated_at) < now() - make_interval(secs => %s)) AS stale "
                "FROM sandbox_run WHERE status = ANY(%s)",
                (self._lease_timeout_s, list(_NON_TERMINAL)),
            ).fetchone()
        unsent = GaugeMetricFamily("sandbox_outbox_unsent", FLEET_GAUGES["sandbox_outbox_unsent"])
        unsent.add_metric([], float(outbox["n"]))
        yield unsent
        unsent_age = GaugeMetricFamily(
            "sandbox_outbox_oldest_unsent_age_seconds",
            FLEET_GAUGES["sandbox_outbox_oldest_unsent_age_seconds"],
        )
        unsent_age.add_metric([], float(outbox["age"]))
        yield unsent_age
        by_status = {row["status"]: row for row in statuses}
        count = GaugeMetricFamily(
            "sandbox_runs_in_status", FLEET_GAUGES["sandbox_runs_in_status"], labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "sandbox_runs_oldest_in_status_seconds",
            FLEET_GAUGES["sandbox_runs_oldest_in_status_seconds"],
            labels=["status"],
        )
        for status in _NON_TERMINAL:
            row = by_status.get(status)
            count.add_metric([status], float(row["n"]) if row else 0.0)
            oldest.add_metric([status], float(row["age"]) if row else 0.0)
        yield count
        yield oldest
        past = GaugeMetricFamily(
            "sandbox_runs_past_deadline", FLEET_GAUGES["sandbox_runs_past_deadline"]
        )
        past.add_metric([], float(late["past_deadline"]))
        yield past
        stale = GaugeMetricFamily(
            "sandbox_runs_stale_heartbeat", FLEET_GAUGES["sandbox_runs_stale_heartbeat"]
        )
        stale.add_metric([], float(late["stale"]))
        yield stale


def message_age(raw: bytes | str | None, now: float) -> float:
    """Return the age in seconds of a raw kombu message from its ``sentAt`` header (0 if none)."""
    if raw is None:
        return 0.0
    try:
        sent = float(json.loads(raw)["headers"]["sentAt"])
    except (ValueError, KeyError, TypeError):
        return 0.0
    return max(0.0, now - sent)


def multiprocess_dir() -> Path | None:
    """Return the multiprocess directory of this service, or None in single-process mode."""
    raw = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())
    return Path(raw) if raw else None


def reset_multiprocess_dir() -> None:
    """Empty this service's multiprocess directory (at service start, before any child forks)."""
    directory = multiprocess_dir()
    if directory is None:
        return
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)


def scrape_registry() -> CollectorRegistry:
    """Return the registry a scrape should read: all processes' files in multiprocess mode."""
    if multiprocess_dir() is None:
        from prometheus_client import REGISTRY

        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live-gauge files (gunicorn ``child_exit``, Celery child exit)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)


def start_worker_server(port: int, addr: str = "127.0.0.1") -> bool:
    """Serve the service's ``/metrics`` from the worker's main process; False if port taken."""
    from prometheus_client import start_http_server

    if port <= 0:
        return False
    try:
        start_http_server(port, addr=addr, registry=scrape_registry())
    except OSError as exc:
        logger.warning("metrics port %s:%s unavailable: %s", addr, port, exc)
        return False
    logger.info("metrics on http://%s:%s/metrics", addr, port)
    return True
