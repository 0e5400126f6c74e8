"""Turn a container's raw output into redacted, numbered log lines: live, inline and in blobs."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from psycopg_pool import ConnectionPool

if TYPE_CHECKING:
    from shared.runtime import Runtime

from shared.adapter_sdk import EVALUATION_MARKER
from shared.db import run_logs
from shared.db import runs as runs_db
from shared.db.run_logs import LogLine
from shared.policy import Resources
from shared.redaction import Redactor, StreamRedactor
from shared.storage import STREAMS, BlobStore, log_path

logger = logging.getLogger(__name__)

_MARKER = EVALUATION_MARKER.encode()

# The evaluation marker at the start of any line but the first of a joined batch.
_NEXT_MARKER = b"\n" + _MARKER

Publisher = Callable[[str, str], None]

# Pending lines go out once the output has paused this long (a flood never pauses and is stored
# in batches of flush_interval_s), but never more often than every _MIN_FLUSH_S.
_QUIET_S = 0.02
_MIN_FLUSH_S = 0.02


def _block(lines: list[str]) -> str:
    """Return lines as one text, each ending with a newline."""
    return "\n".join(lines) + "\n"


@dataclass
class StreamStats:
    """Byte counts of one stream: printed, kept in blob storage, stored inline in Postgres."""

    seen: int = 0
    kept: int = 0
    inline: int = 0

    def to_json(self) -> dict[str, int]:
        return {"bytesSeen": self.seen, "bytesKept": self.kept, "bytesInline": self.inline}


class LogCapture:
    """Redact, number and keep lines as they arrive; keep the evaluation line apart.

    Three destinations, each with its own rule:
    - blob storage gets the full redacted log of each stream, appended in batches while the run
      goes, up to the run's log cap; past it the overflow policy applies;
    - Postgres gets numbered lines up to the inline cap (what the API and previews read);
    - followers get each batch on a pub/sub channel once it is stored.
    A batch is appended to the blob first, then committed to Postgres together with the count of
    raw lines it covers, fenced by attempt and lease. An executor that follows the same container
    again replays the engine's log through a fresh redactor (rebuilding its state), appends to the
    blobs only past their current size, and stores inline only past the recorded counts: no line
    lost, none twice. A batch refused by the fence means this attempt lost the run.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        blobs: BlobStore,
        run: runs_db.Run,
        owner: str,
        redactor: Redactor,
        max_inline_bytes: int,
        blob_cap_bytes: int,
        publish: Publisher | None = None,
        preview_lines: int = 20,
        flush_lines: int = 500,
        flush_interval_s: float = 0.1,
        fresh: bool = False,
    ) -> None:
        self.pool, self.blobs, self.owner = pool, blobs, owner
        self.run_id, self.attempt = run.id, run.attempt
        self.redactor = redactor
        self.streams = {name: StreamRedactor(redactor) for name in STREAMS}
        self.max_inline, self.blob_cap = max_inline_bytes, blob_cap_bytes
        self.publish = publish
        self.flush_lines, self.flush_interval_s = flush_lines, flush_interval_s
        self.skip = dict(run.raw_lines or {"stdout": 0, "stderr": 0})
        self.raw = dict.fromkeys(STREAMS, 0)
        self.stats = {name: StreamStats() for name in STREAMS}
        # Where each blob ends now, and how far this follower's lines have reached in it. A
        # capture the caller knows to be the attempt's first (``fresh``) skips the look-ups.
        first = fresh
        self.blob_size = {
            name: 0 if first else blobs.size(log_path(str(run.id), name)) for name in STREAMS
        }
        self.blob_position = dict.fromkeys(STREAMS, 0)
        self.blob_total = 0
        if first:
            self.seq, self.stored_lines, self.stored_bytes = 0, 0, 0
        else:
            with pool.connection() as conn:
                totals = run_logs.stored_totals(conn, run.id)
            self.seq, self.stored_lines, self.stored_bytes = totals
        self.truncated = False  # inline or blob cap reached: some output was not kept
        self.overflowed = False  # the blob cap was reached
        self.revoked = False
        self.evaluation_raw: str | None = None
        # The first and last lines printed, whether or not the caps let them be kept.
        self.printed = 0
        self._head: list[dict[str, object]] = []
        self._tail: deque[dict[str, object]] = deque(maxlen=preview_lines)
        self._preview_lines = preview_lines
        self._pending: list[LogLine] = []
        self._pending_blob = {name: bytearray() for name in STREAMS}
        self._last_flush = 0.0  # a run's first line goes out at once
        self._lock = threading.Lock()
        # Lines left pending reach followers once the output pauses, and within
        # ``flush_interval_s`` in any case: a flusher thread (started on first need) sees to it.
        self._due = threading.Condition(self._lock)
        self._flusher: threading.Thread | None = None
        self._flusher_idle = False  # waiting for lines, not for a deadline: wake it on new ones
        self._last_sink = 0.0  # when lines last arrived and were left pending
        self._closing = False

    @classmethod
    def for_run(cls, rt: Runtime, run: runs_db.Run, owner: str, fresh: bool = False) -> LogCapture:
        """Return the capture of one attempt, with the limits its resources and settings set.

        ``fresh``: nothing of this attempt was stored yet (its container was just started by
        this process), so where its blobs and lines end need not be looked up.
        """
        assert run.resources is not None, "a ready run has resources"
        return cls(
            rt.pool,
            rt.blobs,
            run,
            owner,
            rt.redactor(),
            rt.settings.max_log_bytes,
            Resources.from_json(run.resources).log_cap_mb * 1024 * 1024,
            rt.publish_lines,
            rt.settings.preview_lines,
            fresh=fresh,
        )

    def sink(self, stream: str, raw: bytes) -> None:
        """Take one raw line (without its newline) from ``stream``."""
        self.sink_lines(stream, [raw])

    def sink_lines(self, stream: str, raws: list[bytes]) -> None:
        """Take a batch of raw lines (without newlines) from ``stream``, in order."""
        with self._lock:
            if not self._take_block(stream, raws):
                self._take_lines(stream, raws)
            if (
                len(self._pending) >= self.flush_lines
                or time.monotonic() - self._last_flush >= self.flush_interval_s
            ):
                self._flush()
            elif self._has_pending():
                self._last_sink = time.monotonic()
                self._arm()

    def _has_pending(self) -> bool:
        return bool(self._pending) or any(self._pending_blob.values())

    def _arm(self) -> None:
        """Make sure what is pending is flushed by its deadline (the caller holds the lock)."""
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_when_due, name=f"flush-{self.run_id}", daemon=True
            )
            self._flusher.start()
        elif self._flusher_idle:
            self._due.notify()

    def _flush_when_due(self) -> None:
        with self._lock:
            while not self._closing:
                self._flusher_idle = not self._has_pending()
                if self._flusher_idle:
                    self._due.wait()
                    continue
                # Due when the output pauses (a line nobody follows up at once), at most every
                # _MIN_FLUSH_S; and at flush_interval_s however busy the output.
                due = max(
                    self._last_flush + _MIN_FLUSH_S,
                    min(self._last_flush + self.flush_interval_s, self._last_sink + _QUIET_S),
                )
                left = due - time.monotonic()
                if left > 0:
                    self._due.wait(left)
                else:
                    self._flush()

    def _take_block(self, stream: str, raws: list[bytes]) -> bool:
        """Take a batch in one piece when none of it is a replay or the evaluation.

        That is nearly every batch of a long output, and per-line Python work would cost about
        as much as redacting it. Returns False, having changed nothing, when it cannot.
        """
        if self.raw[stream] < self.skip.get(stream, 0):
            return False
        joined = b"\n".join(raws)
        if stream == "stdout" and (joined.startswith(_MARKER) or _NEXT_MARKER in joined):
            return False
        self.raw[stream] += len(raws)
        self.stats[stream].seen += len(joined) + 1
        if not (self.overflowed and self.stored_bytes >= self.max_inline):
            joined += b"\n"
            self._redact(stream, joined.decode("utf-8", errors="replace"), inline=True)
        return True

    def _take_lines(self, stream: str, raws: list[bytes]) -> None:
        """Take a batch a line at a time: lines stored before (a replay), the evaluation."""
        skip = self.skip.get(stream, 0)
        text: list[str] = []
        replayed = False
        for raw in raws:
            self.raw[stream] += 1
            self.stats[stream].seen += len(raw) + 1
            is_replay = self.raw[stream] <= skip
            if stream == "stdout" and raw.startswith(_MARKER):
                # The evaluation is stored on the run, redacted, not as a log line. The lines
                # printed before it go through the redactor first: an ``::add-mask::`` among
                # them must already apply to the evaluation.
                if text:
                    self._redact(stream, _block(text), inline=not replayed)
                    text = []
                marker = raw[len(_MARKER) :].decode("utf-8", errors="replace")
                self.evaluation_raw = self.redactor.redact_text(marker)
                continue
            if self.overflowed and self.stored_bytes >= self.max_inline:
                continue  # nothing more can be kept anywhere: count it, skip the redactor
            if text and is_replay != replayed:
                # Lines an earlier follower stored and new ones go through the redactor in
                # separate blocks, so each output line is attributed to its side.
                self._redact(stream, _block(text), inline=not replayed)
                text = []
            replayed = is_replay
            text.append(raw.decode("utf-8", errors="replace"))
        if text:
            self._redact(stream, _block(text), inline=not replayed)

    def _redact(self, stream: str, block: str, *, inline: bool) -> None:
        # One pass over the block: the redactor's per-call cost is paid once, not per line.
        lines = self.streams[stream].feed(block)
        if lines and not self._keep_block(stream, lines, inline=inline):
            for line in lines:
                self._keep(stream, line, inline=inline)

    def _keep_block(self, stream: str, lines: list[str], *, inline: bool) -> bool:
        """Keep redacted lines in one piece once the inline store is full and the preview's
        head is taken, if the blob has room for all of them and none is in it already.

        Returns False, having changed nothing, otherwise: ``_keep`` then goes line by line.
        """
        if inline and self.stored_bytes < self.max_inline:
            return False
        if self.overflowed or len(self._head) < self._preview_lines:
            return False
        data = _block(lines).encode()
        size, position = len(data), self.blob_position[stream]
        if self.blob_total + size > self.blob_cap or position < self.blob_size[stream]:
            return False
        self.printed += len(lines)
        last = lines[-self._preview_lines :] if self._preview_lines else []
        self._tail.extend(
            {"n": n, "stream": stream, "line": line}
            for n, line in enumerate(last, start=self.printed - len(last) + 1)
        )
        self.blob_position[stream] = position + size
        self.blob_total += size
        self.stats[stream].kept += size
        self._pending_blob[stream] += data
        if inline:
            self.truncated = True  # the inline store is full: these lines are not in it
        return True

    def _keep(self, stream: str, line: str, *, inline: bool) -> None:
        self.printed += 1
        entry = {"n": self.printed, "stream": stream, "line": line}
        if len(self._head) < self._preview_lines:
            self._head.append(entry)
        else:
            self._tail.append(entry)
        data = line.encode() + b"\n"
        size = len(data)
        position = self.blob_position[stream]
        # Once over the cap, stay over: a later short line must not slip in after a gap.
        if self.overflowed or self.blob_total + size > self.blob_cap:
            self.overflowed = self.truncated = True
        else:
            self.blob_position[stream] = position + size
            self.blob_total += size
            self.stats[stream].kept += size
            if position + size > self.blob_size[stream]:  # not yet in the blob
                self._pending_blob[stream] += data
        if not inline:
            return
        if self.stored_bytes + size > self.max_inline:
            self.truncated = True
            self.stored_bytes = self.max_inline  # inline is full: later lines skip it too
            return
        self.seq += 1
        self.stored_bytes += size
        self.stored_lines += 1
        self.stats[stream].inline += size
        self._pending.append(LogLine(seq=self.seq, stream=stream, ts=datetime.now(UTC), line=line))

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        if self.revoked:
            self._pending = []
            for buffer in self._pending_blob.values():
                buffer.clear()
            return
        batch, self._pending = self._pending, []
        blob_batch = {s: bytes(b) for s, b in self._pending_blob.items() if b}
        try:
            for stream, data in blob_batch.items():
                self.blobs.append(log_path(str(self.run_id), stream), data)
                self.blob_size[stream] += len(data)
                self._pending_blob[stream].clear()
            with self.pool.connection() as conn, conn.transaction():
                owned = runs_db.record_capture(
                    conn,
                    self.run_id,
                    attempt=self.attempt,
                    owner=self.owner,
                    raw_lines=dict(self.raw),
                    log_stats=self.log_stats,
                )
                if owned:
                    run_logs.append(conn, self.run_id, self.attempt, batch)
        except Exception:
            # Keep the lines for the next flush rather than lose them to a passing hiccup; a
            # blob append that did happen is not repeated (blob_size moved on).
            logger.warning(
                "could not store log lines; will retry", extra={"runId": str(self.run_id)}
            )
            self._pending = batch + self._pending
            return
        if not owned:
            self.revoked = True
            logger.warning(
                "lease lost; not storing this attempt's lines",
                extra={"runId": str(self.run_id), "attempt": self.attempt},
            )
            return
        if batch and self.publish is not None:
            self._announce(batch)

    def _announce(self, batch: list[LogLine]) -> None:
        message = json.dumps(
            {
                "lines": [
                    {"seq": ln.seq, "stream": ln.stream, "ts": ln.ts.isoformat(), "line": ln.line}
                    for ln in batch
                ]
            }
        )
        try:
            assert self.publish is not None
            self.publish(str(self.run_id), message)
        except Exception:
            # Followers also poll Postgres, so a lost announcement only delays them.
            logger.debug("could not announce log lines", exc_info=True)

    def abandon(self) -> None:
        """Stop the flusher without storing anything more: this attempt stops following here."""
        with self._lock:
            self._closing = True
            self._due.notify()

    def close(self) -> None:
        """Flush what is buffered (including a half-open PEM block) and store it."""
        with self._lock:
            self._closing = True
            self._due.notify()
            for stream, redactor in self.streams.items():
                for line in redactor.close():
                    self._keep(stream, line, inline=True)
            self._flush()
            if self._pending:
                raise RuntimeError("log lines could not be stored")

    @property
    def preview(self) -> dict[str, object]:
        """Return the first and last lines printed (redacted) and how many lie between."""
        return {
            "head": list(self._head),
            "tail": list(self._tail),
            "omitted": self.printed - len(self._head) - len(self._tail),
        }

    @property
    def log_stats(self) -> dict[str, dict[str, int]]:
        """Return per-stream byte counts in the API's camelCase shape."""
        return {name: stats.to_json() for name, stats in self.stats.items()}

    @property
    def redaction_counts(self) -> dict[str, int]:
        """Return what the redactor masked so far, by kind."""
        return dict(self.redactor.stats)
