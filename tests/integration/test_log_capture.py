"""LogCapture against real Postgres and the local blob store: caps, replay after takeover."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from psycopg_pool import ConnectionPool

from services.executor.log_capture import LogCapture
from shared.db import run_logs
from shared.db import runs as runs_db
from shared.redaction import Redactor
from shared.states import RunStatus
from shared.storage import log_path
from shared.storage.local import LocalBlobStore
from tests.builders import stored_run


def running_run(pool: ConnectionPool, owner: str = "node:1") -> runs_db.Run:
    with pool.connection() as conn:
        run = stored_run(
            conn,
        )
        runs_db.transition(conn, run.id, RunStatus.PROVISIONING)
        runs_db.transition(conn, run.id, RunStatus.READY)
        moved = runs_db.transition(
            conn, run.id, RunStatus.RUNNING, bump_attempt=True, lease_owner=owner
        )
    assert moved is not None
    return moved


def capture(
    pool: ConnectionPool,
    store: LocalBlobStore,
    run: runs_db.Run,
    owner: str = "node:1",
    inline: int = 1 << 20,
    cap: int = 1 << 20,
    published: list[str] | None = None,
) -> LogCapture:
    return LogCapture(
        pool,
        store,
        run,
        owner,
        Redactor(),
        inline,
        cap,
        (lambda _run, msg: published.append(msg)) if published is not None else None,
        preview_lines=2,
    )


def test_lines_go_inline_to_the_blob_and_to_followers(pool: ConnectionPool, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, b"k" * 32)
    run = running_run(pool)
    published: list[str] = []
    cap = capture(pool, store, run, published=published)
    for i in range(5):
        cap.sink("stdout", f"line {i} mail a@example.com".encode())
    cap.sink("stderr", b"warn")
    cap.sink("stdout", b'::sandbox-evaluation::{"ok": true}')
    cap.close()
    with pool.connection() as conn:
        stored = run_logs.all_lines(conn, run.id)
    assert next(x.line for x in stored if x.stream == "stdout") == "line 0 mail [REDACTED:email]"
    assert store.get(log_path(str(run.id), "stdout")).decode().splitlines() == [
        x.line for x in stored if x.stream == "stdout"
    ]
    assert cap.evaluation_raw == '{"ok": true}'
    assert published, "followers were told"
    assert cap.preview["omitted"] == 2 and len(cap.preview["head"]) == 2
    assert cap.preview["tail"][-1]["line"] == "warn"
    assert cap.redaction_counts == {"email": 5}


def test_lines_followed_by_silence_are_stored_without_waiting_for_more(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    store = LocalBlobStore(tmp_path, b"k" * 32)
    run = running_run(pool)
    published: list[str] = []
    cap = capture(pool, store, run, published=published)
    cap.sink("stdout", b"starting")
    cap.sink("stdout", b"loading the model")  # then nothing more for a while
    stored: list[str] = []
    deadline = time.monotonic() + 10
    while len(stored) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        with pool.connection() as conn:
            stored = [x.line for x in run_logs.all_lines(conn, run.id)]
    assert stored == ["starting", "loading the model"]
    assert store.get(log_path(str(run.id), "stdout")) == b"starting\nloading the model\n"
    assert "loading the model" in published[-1]
    cap.close()


def test_caps_keep_counting_what_they_do_not_keep(pool: ConnectionPool, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, b"k" * 32)
    run = running_run(pool)
    cap = capture(pool, store, run, inline=100, cap=250)
    for _ in range(10):
        cap.sink("stdout", b"x" * 49)  # 50 bytes with the newline
    cap.close()
    stats = cap.log_stats["stdout"]
    assert stats == {"bytesSeen": 500, "bytesKept": 250, "bytesInline": 100}
    assert cap.truncated and cap.overflowed
    assert len(store.get(log_path(str(run.id), "stdout"))) == 250


@pytest.mark.parametrize("blob_cap", [12000, 1 << 20])
def test_batches_keep_exactly_what_single_lines_keep(
    pool: ConnectionPool, tmp_path: Path, blob_cap: int
) -> None:
    # A long output arrives in batches that are kept in one piece once the inline store is full
    # (LogCapture._take_block, _keep_block); every figure must equal a line-at-a-time capture.
    output = [f"{i:04d} mail user{i}@example.com".encode() for i in range(400)]
    kept = []
    for batch in (1, 37):
        store = LocalBlobStore(tmp_path / str(batch), b"k" * 32)
        run = running_run(pool)
        cap = capture(pool, store, run, inline=500, cap=blob_cap)
        for k in range(0, len(output), batch):
            cap.sink_lines("stdout", output[k : k + batch])
        for k in range(0, 80, batch):
            cap.sink_lines("stderr", [b"warn " + raw for raw in output[k : min(k + batch, 80)]])
        cap.sink_lines("stdout", [b"last", b'::sandbox-evaluation::{"ok": true}'])
        cap.close()
        with pool.connection() as conn:
            stored = [(x.seq, x.stream, x.line) for x in run_logs.all_lines(conn, run.id)]
        blobs = [store.get(log_path(str(run.id), name)) for name in ("stdout", "stderr")]
        # Past the blob cap, lines are counted without going through the redactor, and the
        # preview shows the last lines that did: batches reach that point at their own edge.
        preview = cap.preview if not cap.overflowed else None
        kept.append((stored, blobs, preview, cap.log_stats, cap.truncated, cap.evaluation_raw))
    assert kept[0] == kept[1]
    stored, blobs, preview, stats, truncated, evaluation = kept[1]
    assert truncated and evaluation == '{"ok": true}'
    assert len(stored) < 30 and stored[0] == (1, "stdout", "0000 mail [REDACTED:email]")
    tail = b'last\n::sandbox-evaluation::{"ok": true}\n'
    assert stats["stdout"]["bytesSeen"] == sum(len(raw) + 1 for raw in output) + len(tail)
    assert blobs[0].decode().startswith("0000 mail [REDACTED:email]\n0001 mail")
    total_kept = stats["stdout"]["bytesKept"] + stats["stderr"]["bytesKept"]
    if blob_cap == 12000:
        assert 12000 - 40 < total_kept <= 12000
    else:
        assert total_kept == sum(map(len, blobs))
        assert blobs[0].decode().endswith("0399 mail [REDACTED:email]\nlast\n")
        assert preview is not None and preview["tail"][-1]["line"] == "last"


def test_a_second_follower_of_the_same_container_neither_loses_nor_repeats(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    store = LocalBlobStore(tmp_path, b"k" * 32)
    run = running_run(pool)
    first = capture(pool, store, run)
    output = [f"line {i}".encode() for i in range(10)]
    for raw in output[:4]:
        first.sink("stdout", raw)
    first._flush()  # the first executor stored 4 lines, then died
    for raw in output[4:6]:
        first.sink("stdout", raw)  # printed, appended nowhere yet
    first.abandon()  # its process died: its flusher does not run any more
    with pool.connection() as conn:
        runs_db.release_lease(conn, run.id, attempt=run.attempt)
        taken = runs_db.transition(
            conn,
            run.id,
            RunStatus.RUNNING,
            from_=(RunStatus.RUNNING,),
            attempt=run.attempt,
            stale_lease_s=30,
            bump_takeovers=True,
            lease_owner="node:2",
        )
    assert taken is not None
    second = capture(pool, store, taken, owner="node:2")
    for raw in output:  # the engine replays the container's log from the start
        second.sink("stdout", raw)
    second.close()
    with pool.connection() as conn:
        stored = [x.line for x in run_logs.all_lines(conn, run.id)]
    expected = [raw.decode() for raw in output]
    assert stored == expected
    assert store.get(log_path(str(run.id), "stdout")).decode().splitlines() == expected
    first.close()  # the old follower wakes up: its lease is gone, it stores nothing
    assert first.revoked
    with pool.connection() as conn:
        assert [x.line for x in run_logs.all_lines(conn, run.id)] == expected


def test_a_mask_added_in_the_same_batch_applies_to_the_evaluation(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    store = LocalBlobStore(tmp_path, b"k" * 32)
    run = running_run(pool)
    cap = capture(pool, store, run)
    cap.sink_lines(
        "stdout",
        [
            b"::add-mask::hush-hush-42",
            b"value hush-hush-42",
            b'::sandbox-evaluation::{"v": "hush-hush-42"}',
        ],
    )
    cap.close()
    assert cap.evaluation_raw == '{"v": "[REDACTED:secret_value]"}'
    with pool.connection() as conn:
        assert [x.line for x in run_logs.all_lines(conn, run.id)] == [
            "value [REDACTED:secret_value]"
        ]
