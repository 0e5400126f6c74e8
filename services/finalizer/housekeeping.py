"""Periodic work: the reconciler (lost messages, dead executors, deadlines, orphan containers)
and the outbox relay. One reconciler is active at a time (a Postgres advisory lock)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from psycopg import sql

from shared import dispatch
from shared.backends import docker as docker_backend
from shared.backends import egress
from shared.db import idempotency, outbox
from shared.db import runs as runs_db
from shared.errors import BackendError
from shared.queues import TaskNames
from shared.runtime import Runtime
from shared.states import RunStatus
from shared.storage import run_prefix

logger = logging.getLogger(__name__)

# Any constant works; every reconciler process must use the same one.
RECONCILER_LOCK = 0x5A4D_5EE9
# Each waiting status and the task that moves it on when its message was lost.
_NEXT_TASK: dict[RunStatus, str] = {
    RunStatus.QUEUED: TaskNames.PROVISION,
    RunStatus.PROVISIONING: TaskNames.PROVISION,
    RunStatus.READY: TaskNames.EXECUTE,
    RunStatus.FINALIZING: TaskNames.FINALIZE,
}


def reconcile(rt: Runtime) -> dict[str, int] | None:
    """Sweep once; return what was done, or None if another reconciler holds the lock."""
    counts: dict[str, int] = {}
    dispatches: list[dispatch.Dispatch] = []
    with rt.pool.connection() as conn:
        locked = conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s) AS ok", (RECONCILER_LOCK,)
        ).fetchone()
        if not locked or not locked["ok"]:
            return None
        _end_past_deadline(rt, conn, counts)
        dispatches += _redispatch_lost(rt, conn, counts)
        dispatches += _rescue_dead_leases(rt, conn, counts)
        counts["idempotencyKeysPurged"] = idempotency.purge_expired(conn)
    dispatch.flush(rt.celery, rt.pool, dispatches)
    counts["orphansRemoved"] = _remove_orphans(rt)
    counts["orphanNetworksRemoved"] = _remove_orphan_networks(rt)
    counts["aciOrphansRemoved"] = _remove_aci_orphans(rt)
    done = {k: v for k, v in counts.items() if v}
    if done:
        logger.info("reconciler acted", extra={"counts": done})
    return counts


def _end_past_deadline(rt: Runtime, conn: Any, counts: dict[str, int]) -> None:
    for run in runs_db.list_past_deadline(conn):
        moved = runs_db.transition(
            conn,
            run.id,
            RunStatus.ERROR,
            from_=(run.status,),
            attempt=run.attempt,
            reason=f"deadline_exceeded: the run stayed {run.status.value} past its deadline",
        )
        if moved is not None:
            counts["deadlineExceeded"] = counts.get("deadlineExceeded", 0) + 1


def _redispatch_lost(rt: Runtime, conn: Any, counts: dict[str, int]) -> list[dispatch.Dispatch]:
    queued = []
    for status, task in _NEXT_TASK.items():
        for run in runs_db.list_stale(conn, status, rt.settings.resend_after_s):
            # Touch the run so it is not re-sent again on every sweep while the task is queued.
            runs_db.touch(conn, run.id)
            queued.append(dispatch.enqueue(conn, task, run.id))
            counts[f"redispatched.{status.value}"] = (
                counts.get(f"redispatched.{status.value}", 0) + 1
            )
    return queued


def _rescue_dead_leases(rt: Runtime, conn: Any, counts: dict[str, int]) -> list[dispatch.Dispatch]:
    queued = []
    for run in runs_db.list_dead_leases(conn, rt.settings.lease_timeout_s):
        runs_db.touch(conn, run.id)
        # The executor that picks this up takes the lease over, re-attaches to the container
        # and counts the takeover; past max_attempts it ends the run.
        queued.append(dispatch.enqueue(conn, TaskNames.EXECUTE, run.id))
        counts["deadLeases"] = counts.get("deadLeases", 0) + 1
    return queued


def _remove_orphans(rt: Runtime) -> int:
    """Remove containers of runs that are over, unknown, or of an attempt that is not current."""
    try:
        client = rt.docker()
        found = docker_backend.list_sandbox_containers(client, rt.settings.fleet_name)
    except BackendError:
        logger.warning("cannot list containers; orphans left for the next sweep")
        return 0
    if not found:
        return 0
    ids = {uuid.UUID(run_id) for run_id, _, _ in found if _is_uuid(run_id)}
    with rt.pool.connection() as conn:
        live = runs_db.live_attempts(conn, list(ids))
    removed = 0
    for run_id, attempt, container in found:
        if _is_uuid(run_id) and live.get(uuid.UUID(run_id)) == attempt:
            continue
        docker_backend.remove_labelled(container)
        removed += 1
    return removed


def _remove_orphan_networks(rt: Runtime) -> int:
    """Remove egress networks of runs that are over, unknown or on another attempt (issue 6).

    Their proxies went with the containers above; a network still in use stays for next time.
    """

    def live(run_ids: list[str]) -> dict[str, int]:
        ids = [uuid.UUID(run_id) for run_id in run_ids if _is_uuid(run_id)]
        with rt.pool.connection() as conn:
            return {str(k): v for k, v in runs_db.live_attempts(conn, ids).items()}

    try:
        return egress.remove_orphan_networks(rt.docker(), rt.settings.fleet_name, live)
    except BackendError:
        logger.warning("cannot list egress networks; orphans left for the next sweep")
        return 0


def _remove_aci_orphans(rt: Runtime) -> int:
    """Delete this fleet's container groups whose run is over, unknown or on another attempt."""
    if rt.aci_config is None:
        return 0
    from shared.backends import aci

    try:
        client = rt.aci()
        found = aci.list_fleet_groups(client, rt.aci_config)
        if not found:
            return 0
        ids = [uuid.UUID(run_id) for run_id, _, _ in found if _is_uuid(run_id)]
        with rt.pool.connection() as conn:
            live = runs_db.live_attempts(conn, ids)
        removed = 0
        for run_id, attempt, name in found:
            if _is_uuid(run_id) and live.get(uuid.UUID(run_id)) == attempt:
                continue
            aci.delete(client, rt.aci_config, name)
            removed += 1
        return removed
    except BackendError as exc:
        logger.warning("cannot sweep container groups (%s); next sweep", exc)
        return 0


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def relay_outbox(
    rt: Runtime, limit: int = 500, older_than_s: float = 1.0, budget_s: float = 0.8
) -> int:
    """Publish unsent outbox rows: dispatches to their queues, events to the event sink.

    Rows younger than ``older_than_s`` are left to the process that wrote them (it publishes
    right after its commit); the relay only picks up what that process could not send. Batch
    after batch until the backlog is gone or ``budget_s`` is spent: a busy fleet writes several
    events per run, and one batch per beat tick fell behind at a few hundred runs a second.
    """
    deadline = time.monotonic() + budget_s
    total = 0
    while True:
        sent, complete = _relay_batch(rt, limit, older_than_s)
        total += sent
        if not complete or sent < limit or time.monotonic() >= deadline:
            return total


def _relay_batch(rt: Runtime, limit: int, older_than_s: float) -> tuple[int, bool]:
    """Relay one batch; return how many rows were sent and whether the whole batch was."""
    from services.finalizer import webhooks
    from shared.events import STATE_CHANGED

    with rt.pool.connection() as conn:
        batch = outbox.claim_batch(conn, limit, older_than_s)
        sent = []
        # Events go to the configured sink first (log, Event Hubs or Service Bus, issue 7); an
        # event it did not take, and everything after it, waits for the next sweep.
        events = [row for row in batch if row["kind"] != dispatch.DISPATCH]
        published = {row["id"] for row in events[: rt.event_sink.publish(events)]}
        # Most runs have no callback and no commit status: one query finds those that do.
        targeted = webhooks.runs_with_targets(
            conn, [row["run_id"] for row in events if row["kind"] == STATE_CHANGED]
        )
        for row in batch:
            if row["kind"] == dispatch.DISPATCH:
                try:
                    dispatch.publish(rt.celery, row["payload"], str(row["event_id"]))
                except Exception:
                    logger.warning("broker still unavailable; dispatches wait", exc_info=False)
                    break
            else:
                if row["id"] not in published:
                    break
                if row["kind"] == STATE_CHANGED and row["run_id"] in targeted:
                    # Same transaction: a delivery exists exactly when the event is marked sent.
                    webhooks.schedule_for_event(rt, conn, row)
            sent.append(row["id"])
        outbox.mark_sent(conn, sent)
    return len(sent), len(sent) == len(batch)


# Every run rewrites its row several times and adds several outbox rows.
_CHURNED_TABLES = ("sandbox_run", "outbox", "idempotency_key", "webhook_delivery")


def vacuum_if_unattended(rt: Runtime) -> list[str]:
    """Vacuum the churned tables that need it, if the server's autovacuum is off; return them.

    Without vacuuming, the partial indexes on active runs fill with dead entries: on a server
    with autovacuum off, listing active runs read 90,000 index entries and took 23 ms after a
    day of benchmarks, and every sweep of the reconciler paid the same. A table is vacuumed by
    autovacuum's own default rule (dead rows over 50 + 20 % of the live ones), so a big table is
    not scanned every minute for a few dead rows.
    """
    with rt.pool.connection() as conn:
        if conn.execute("SELECT current_setting('autovacuum') AS on").fetchone()["on"] == "on":
            return []
        due = [
            row["relname"]
            for row in conn.execute(
                "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(%s) "
                "AND n_dead_tup > 50 + 0.2 * n_live_tup",
                (list(_CHURNED_TABLES),),
            ).fetchall()
        ]
        conn.commit()
        conn.autocommit = True  # VACUUM cannot run inside a transaction
        try:
            for table in due:
                conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        finally:
            conn.autocommit = False
    if due:
        logger.info("vacuumed %s: the server's autovacuum is off", ", ".join(due))
    return due


def purge_old_artefacts(rt: Runtime, limit: int = 500) -> dict[str, int]:
    """Delete logs, results and published events of runs finished SANDBOX_RETENTION_DAYS ago.

    The run row stays (status, reason, evaluation, timestamps): only the bulky evidence goes, and
    the run records when (``purged_at``). Returns what was removed.
    """
    removed = {"runs": 0, "blobs": 0, "bytes": 0, "lines": 0, "events": 0}
    with rt.pool.connection() as conn:
        due = runs_db.list_purgeable(conn, rt.settings.retention_days, limit)
    for run_id in due:
        blobs, size = rt.blobs.delete_prefix(run_prefix(str(run_id)))
        with rt.pool.connection() as conn:
            removed["lines"] += runs_db.mark_purged(conn, run_id)
            removed["events"] += outbox.delete_published(conn, run_id)
        removed["runs"] += 1
        removed["blobs"] += blobs
        removed["bytes"] += size
    if removed["runs"]:
        logger.info(
            "retention removed %d runs' logs and results: %d blobs, %d bytes, %d log lines, "
            "%d events",
            removed["runs"],
            removed["blobs"],
            removed["bytes"],
            removed["lines"],
            removed["events"],
            extra={"removed": removed},
        )
    return removed
