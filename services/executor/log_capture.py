"""Turn a container's raw output into redacted, numbered log lines in Postgres."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from psycopg_pool import ConnectionPool

from shared.adapter_sdk import EVALUATION_MARKER
from shared.db import run_logs
from shared.db import runs as runs_db
from shared.db.run_logs import LogLine
from shared.redaction import Redactor, StreamRedactor

logger = logging.getLogger(__name__)

_MARKER = EVALUATION_MARKER.encode()


class LogCapture:
    """Redact, number and store lines as they arrive; keep the evaluation line apart.

    Lines are written in small batches so a follower sees them while the run goes on, and so
    output printed just before a kill is already stored. Each batch commits together with the
    count of raw lines it covers, fenced by attempt and lease: an executor that follows the same
    container again replays the engine's log through a fresh redactor (rebuilding its state) and
    stores only what lies past those counts — no line lost, none twice. A batch refused by the
    fence means this attempt lost the run; it stops storing. Past ``max_bytes`` of stored text
    lines are counted but not stored (``truncated``).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        run: runs_db.Run,
        owner: str,
        redactor: Redactor,
        max_bytes: int,
        flush_lines: int = 200,
        flush_interval_s: float = 0.2,
    ) -> None:
        self.pool, self.run_id, self.attempt, self.owner = pool, run.id, run.attempt, owner
        self.redactor = redactor
        self.streams = {name: StreamRedactor(redactor) for name in ("stdout", "stderr")}
        self.max_bytes = max_bytes
        self.flush_lines, self.flush_interval_s = flush_lines, flush_interval_s
        self.skip = dict(run.raw_lines or {"stdout": 0, "stderr": 0})
        self.raw = {"stdout": 0, "stderr": 0}
        with pool.connection() as conn:
            self.seq, self.stored_lines, self.stored_bytes = run_logs.stored_totals(conn, run.id)
        self.seen_bytes = {"stdout": 0, "stderr": 0}
        self.truncated = False
        self.revoked = False
        self.evaluation_raw: str | None = None
        self._pending: list[LogLine] = []
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()

    def sink(self, stream: str, raw: bytes) -> None:
        """Take one raw line (without its newline) from ``stream``."""
        with self._lock:
            self.raw[stream] += 1
            self.seen_bytes[stream] += len(raw) + 1
            replayed = self.raw[stream] <= self.skip.get(stream, 0)
            if stream == "stdout" and raw.startswith(_MARKER):
                # The evaluation is stored on the run, redacted, not as a log line.
                text = raw[len(_MARKER) :].decode("utf-8", errors="replace")
                self.evaluation_raw = self.redactor.redact_text(text)
                return
            lines = self.streams[stream].feed(raw.decode("utf-8", errors="replace") + "\n")
            if replayed:
                return  # stored by an earlier follower of this container
            for line in lines:
                self._add(stream, line)
            if (
                len(self._pending) >= self.flush_lines
                or time.monotonic() - self._last_flush >= self.flush_interval_s
            ):
                self._flush()

    def _add(self, stream: str, line: str) -> None:
        size = len(line.encode()) + 1
        if self.stored_bytes + size > self.max_bytes:
            self.truncated = True
            return
        self.seq += 1
        self.stored_bytes += size
        self.stored_lines += 1
        self._pending.append(LogLine(seq=self.seq, stream=stream, ts=datetime.now(UTC), line=line))

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        if self.revoked:
            self._pending = []
            return
        batch, self._pending = self._pending, []
        try:
            with self.pool.connection() as conn, conn.transaction():
                owned = runs_db.record_capture(
                    conn,
                    self.run_id,
                    attempt=self.attempt,
                    owner=self.owner,
                    raw_lines=dict(self.raw),
                )
                if owned:
                    run_logs.append(conn, self.run_id, self.attempt, batch)
            if not owned:
                self.revoked = True
                logger.warning(
                    "lease lost; not storing this attempt's lines",
                    extra={"runId": str(self.run_id), "attempt": self.attempt},
                )
        except Exception:
            # Keep the lines for the next flush rather than lose them to a passing DB hiccup.
            logger.warning(
                "could not store log lines; will retry", extra={"runId": str(self.run_id)}
            )
            self._pending = batch + self._pending

    def close(self) -> None:
        """Flush what is buffered (including a half-open PEM block) and store it."""
        with self._lock:
            for stream, redactor in self.streams.items():
                for line in redactor.close():
                    self._add(stream, line)
            self._flush()
            if self._pending:
                raise RuntimeError("log lines could not be stored")

    @property
    def redaction_counts(self) -> dict[str, int]:
        """Return what the redactor masked so far, by kind."""
        return dict(self.redactor.stats)
