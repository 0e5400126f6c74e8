"""The run repository against a real Postgres: compare-and-set, attempt fencing, outbox."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from shared.db import make_pool, outbox
from shared.db import runs as runs_db
from shared.states import RunStatus
from tests.builders import stored_run


def new_run(pool: ConnectionPool) -> runs_db.Run:
    with pool.connection() as conn:
        return stored_run(
            conn,
            input={"a": 1},
        )


def test_create_writes_the_run_and_its_audit_event_together(pool: ConnectionPool) -> None:
    run = new_run(pool)
    with pool.connection() as conn:
        events = outbox.events_for_run(conn, run.id)
        assert runs_db.get_run(conn, run.id) == run
    assert run.status is RunStatus.QUEUED and run.attempt == 0
    assert [e["payload"]["status"] for e in events] == ["queued"]


def test_a_rolled_back_submit_leaves_nothing(pool: ConnectionPool) -> None:
    with pool.connection() as conn, pytest.raises(RuntimeError):
        with conn.transaction():
            run = stored_run(
                conn,
            )
            raise RuntimeError("broker down")
    with pool.connection() as conn:
        assert runs_db.get_run(conn, run.id) is None
        assert outbox.events_for_run(conn, run.id) == []


def test_transition_is_a_compare_and_set(pool: ConnectionPool) -> None:
    run = new_run(pool)
    with pool.connection() as conn:
        moved = runs_db.transition(conn, run.id, RunStatus.PROVISIONING, from_=(RunStatus.QUEUED,))
        again = runs_db.transition(conn, run.id, RunStatus.PROVISIONING, from_=(RunStatus.QUEUED,))
    assert moved is not None and moved.status is RunStatus.PROVISIONING
    assert again is None


def test_attempt_fences_a_stale_worker(pool: ConnectionPool) -> None:
    run = new_run(pool)
    with pool.connection() as conn:
        runs_db.transition(conn, run.id, RunStatus.PROVISIONING)
        runs_db.transition(conn, run.id, RunStatus.READY, resources={"cpu": 1})
        first = runs_db.transition(
            conn, run.id, RunStatus.RUNNING, bump_attempt=True, lease_owner="a"
        )
        assert first is not None and first.attempt == 1 and first.started_at is not None
        runs_db.release_lease(conn, run.id, attempt=1)
        second = runs_db.transition(
            conn,
            run.id,
            RunStatus.RUNNING,
            from_=(RunStatus.RUNNING,),
            bump_attempt=True,
            stale_lease_s=30,
            lease_owner="b",
        )
        assert second is not None and second.attempt == 2
        stale = runs_db.transition(conn, run.id, RunStatus.FINALIZING, attempt=1)
        assert stale is None
        assert not runs_db.heartbeat(conn, run.id, attempt=1, owner="a")
        assert runs_db.heartbeat(conn, run.id, attempt=2, owner="b")


def test_a_live_lease_cannot_be_taken_over(pool: ConnectionPool) -> None:
    run = new_run(pool)
    with pool.connection() as conn:
        runs_db.transition(conn, run.id, RunStatus.PROVISIONING)
        runs_db.transition(conn, run.id, RunStatus.READY)
        runs_db.transition(conn, run.id, RunStatus.RUNNING, bump_attempt=True, lease_owner="a")
        taken = runs_db.transition(
            conn,
            run.id,
            RunStatus.RUNNING,
            from_=(RunStatus.RUNNING,),
            bump_attempt=True,
            stale_lease_s=30,
            lease_owner="b",
        )
    assert taken is None


def test_terminal_status_stamps_finalized_and_writes_one_event_per_change(
    pool: ConnectionPool,
) -> None:
    run = new_run(pool)
    with pool.connection() as conn:
        runs_db.transition(conn, run.id, RunStatus.PROVISIONING)
        done = runs_db.transition(conn, run.id, RunStatus.ERROR, reason="image_not_found: x")
        events = outbox.events_for_run(conn, run.id)
    assert done is not None and done.finalized_at is not None and done.terminal
    assert [(e["payload"]["previousStatus"], e["payload"]["status"]) for e in events] == [
        (None, "queued"),
        ("queued", "provisioning"),
        ("provisioning", "error"),
    ]


def test_the_database_refuses_a_terminal_run_without_finalized_at(pool: ConnectionPool) -> None:
    run = new_run(pool)
    with pool.connection() as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE sandbox_run SET status = 'succeeded' WHERE id = %s", (run.id,))


def test_transition_refuses_impossible_moves_and_unknown_columns(pool: ConnectionPool) -> None:
    run = new_run(pool)
    with pool.connection() as conn:
        with pytest.raises(ValueError, match="no status may move"):
            runs_db.transition(conn, run.id, RunStatus.FINALIZING, from_=(RunStatus.QUEUED,))
        with pytest.raises(ValueError, match="cannot set"):
            runs_db.transition(conn, run.id, RunStatus.PROVISIONING, input={})


def test_a_connection_the_server_dropped_is_replaced_on_checkout(database_url: str) -> None:
    pool = make_pool(database_url, max_size=1)
    pool.open(wait=True)
    try:
        with pool.connection() as conn:
            dropped = conn.info.backend_pid
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (dropped,))
            # The server's FATAL message reaches the idle socket before the next checkout.
            for _ in range(50):
                if not admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (dropped,)
                ).fetchone():
                    break
                time.sleep(0.02)
        with pool.connection() as conn:
            assert conn.info.backend_pid != dropped
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    finally:
        pool.close()
