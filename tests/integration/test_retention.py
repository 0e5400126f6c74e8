"""Retention deletes old logs and results, keeps the run row, and says how much it removed."""

from __future__ import annotations

import dataclasses
import time
import uuid

from psycopg_pool import ConnectionPool

from services.finalizer.housekeeping import purge_old_artefacts, vacuum_if_unattended
from shared.config import Settings
from shared.db import make_pool, outbox, run_logs
from shared.db import runs as runs_db
from shared.runtime import Runtime
from shared.states import RunStatus
from shared.storage import log_path
from tests.builders import stored_run


def finished_run(pool: ConnectionPool, days_ago: int) -> uuid.UUID:
    with pool.connection() as conn:
        run = stored_run(
            conn,
        )
        runs_db.transition(conn, run.id, RunStatus.PROVISIONING)
        runs_db.transition(conn, run.id, RunStatus.ERROR, reason="x")
        conn.execute(
            "UPDATE sandbox_run SET finalized_at = now() - make_interval(days => %s) WHERE id = %s",
            (days_ago, run.id),
        )
        run_logs.append(conn, run.id, 0, [run_logs.LogLine(1, "stdout", run.queued_at, "hi")])
        conn.execute(
            "UPDATE outbox SET sent_at = now() WHERE run_id = %s AND payload->>'status' <> 'error'",
            (run.id,),
        )
    return run.id


def test_old_artefacts_go_and_recent_ones_stay(
    pool: ConnectionPool, settings: Settings, tmp_path: object
) -> None:
    rt = Runtime(dataclasses.replace(settings, retention_days=30, blob_dir=tmp_path))  # type: ignore[arg-type]
    old, recent = finished_run(pool, 40), finished_run(pool, 1)
    for run_id in (old, recent):
        rt.blobs.append(log_path(str(run_id), "stdout"), b"hi\n")
        rt.blobs.put(f"{run_id}/result.json", b"{}", "application/json")
    try:
        removed = purge_old_artefacts(rt)
    finally:
        rt.close()
    # Each run has three events: queued and provisioning were published, error was not yet.
    assert removed == {"runs": 1, "blobs": 2, "bytes": 5, "lines": 1, "events": 2}
    assert rt.blobs.size(log_path(str(old), "stdout")) == 0
    assert rt.blobs.size(log_path(str(recent), "stdout")) == 3
    with pool.connection() as conn:
        purged = runs_db.get_run(conn, old)
        kept = runs_db.get_run(conn, recent)
    assert purged is not None and purged.purged_at is not None and purged.status is RunStatus.ERROR
    assert kept is not None and kept.purged_at is None
    with pool.connection() as conn:
        left = {run: outbox.events_for_run(conn, run) for run in (old, recent)}
    assert [row["sent_at"] for row in left[old]] == [None], "an unsent event waits for the relay"
    assert len(left[recent]) == 3


def test_churned_tables_are_vacuumed_when_the_server_does_not(
    pool: ConnectionPool, settings: Settings
) -> None:
    churn = make_pool(settings.database_url, max_size=1)
    churn.open(wait=True)
    for _ in range(30):
        finished_run(churn, 1)  # each leaves dead row versions behind: past autovacuum's rule
    churn.close()  # a backend that exits reports its statistics
    deadline = time.monotonic() + 10
    with pool.connection() as conn:
        while (
            time.monotonic() < deadline
            and not conn.execute(
                "SELECT 1 FROM pg_stat_user_tables WHERE relname = 'sandbox_run' "
                "AND n_dead_tup > 50 + 0.2 * n_live_tup"
            ).fetchone()
        ):
            conn.commit()  # a new snapshot of the statistics
            time.sleep(0.1)
    rt = Runtime(settings)
    try:
        with pool.connection() as conn:
            unattended = conn.execute("SELECT current_setting('autovacuum') = 'off' AS off")
            unattended = unattended.fetchone()["off"]  # type: ignore[index]
        vacuumed = vacuum_if_unattended(rt)
    finally:
        rt.close()
    with pool.connection() as conn:
        dead = conn.execute(
            "SELECT n_dead_tup, last_vacuum FROM pg_stat_user_tables WHERE relname = 'sandbox_run'"
        ).fetchone()
    assert dead is not None
    if unattended:  # this machine's CI Postgres runs with autovacuum off
        assert "sandbox_run" in vacuumed
        assert dead["n_dead_tup"] == 0 and dead["last_vacuum"] is not None
    else:
        assert vacuumed == []
