"""Line-oriented redaction of chunked streams, and a logging filter."""

from __future__ import annotations

import logging
import re

from .core import Redactor
from .detectors import mask

_BEGIN_RE = re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----")
_END_RE = re.compile(r"-----END[A-Z0-9 ]*PRIVATE KEY-----")
# What the inside of a PEM block looks like: base64 lines and RFC 1421 headers. Short lines
# are not swallowed, so ordinary words after a runaway block are kept.
_KEY_BODY_RE = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}|(?:Proc-Type|DEK-Info):.*|")


class StreamRedactor:
    """Redact a text stream arriving in chunks, emitting complete redacted lines."""

    def __init__(
        self,
        redactor: Redactor | None = None,
        *,
        max_block_lines: int = 200,
        max_block_bytes: int = 64 * 1024,
        max_line_chars: int = 1024 * 1024,
    ) -> None:
        """Wrap ``redactor`` (a default one if None) with PEM-block and line-length caps."""
        self.redactor = redactor if redactor is not None else Redactor()
        self.max_block_lines = max_block_lines
        self.max_block_bytes = max_block_bytes
        self.max_line_chars = max_line_chars
        self._partial: list[str] = []
        self._partial_len = 0
        self._block: list[str] | None = None  # lines of an open PEM private-key block
        self._block_bytes = 0
        self._discarding = False  # inside an over-long key block that was already masked

    def feed(self, chunk: str) -> list[str]:
        """Accept a chunk and return the redacted lines it completed (without newlines)."""
        self._partial.append(chunk)
        self._partial_len += len(chunk)
        if "\n" not in chunk:
            if self._partial_len <= self.max_line_chars:
                return []
            # Bound memory on output that never ends a line; a secret straddling this cut
            # can escape, which is the price of not buffering without limit.
            line = "".join(self._partial)
            self._partial, self._partial_len = [], 0
            return self._process([line])
        *lines, rest = "".join(self._partial).split("\n")
        self._partial = [rest] if rest else []
        self._partial_len = len(rest)
        return self._process(lines)

    def close(self) -> list[str]:
        """Flush the unterminated last line and any open key block."""
        out = self._process(["".join(self._partial)]) if self._partial else []
        self._partial, self._partial_len = [], 0
        if self._block is not None:
            out += self._flush_block()
        self._discarding = False
        return out

    def _redact_lines(self, lines: list[str]) -> list[str]:
        # One call per batch, not per line: the per-call overhead dominates on short lines.
        if not lines:
            return []
        return self.redactor.redact_text("\n".join(lines)).split("\n")

    def _flush_block(self) -> list[str]:
        block, self._block, self._block_bytes = self._block or [], None, 0
        return self._redact_lines(block)

    def _process(self, lines: list[str]) -> list[str]:
        if (
            self._block is None
            and not self._discarding
            and not any("PRIVATE KEY" in line for line in lines)
        ):
            return self._redact_lines(lines)
        out: list[str] = []
        batch: list[str] = []
        for line in lines:
            if self._block is not None:
                self._block.append(line)
                self._block_bytes += len(line) + 1
                if _END_RE.search(line):
                    out += self._flush_block()
                elif (
                    len(self._block) > self.max_block_lines
                    or self._block_bytes > self.max_block_bytes
                ):
                    self._block, self._block_bytes = None, 0
                    self._discarding = True
                    self.redactor.stats["private_key"] += 1
                    out.append(mask("private_key"))
                continue
            if self._discarding:
                end = _END_RE.search(line)
                if end:
                    self._discarding = False
                    batch.append(line[end.end() :])
                    continue
                if _KEY_BODY_RE.fullmatch(line.strip()):
                    continue
                self._discarding = False
            if "PRIVATE KEY" in line and self._opens_block(line):
                out += self._redact_lines(batch)
                batch = []
                self._block = [line]
                self._block_bytes = len(line) + 1
                continue
            batch.append(line)
        out += self._redact_lines(batch)
        return out

    @staticmethod
    def _opens_block(line: str) -> bool:
        begins = list(_BEGIN_RE.finditer(line))
        return bool(begins) and _END_RE.search(line, begins[-1].end()) is None


class RedactingFilter(logging.Filter):
    """Redact the formatted message, exception text and stack info of each log record."""

    def __init__(self, redactor: Redactor | None = None, name: str = "") -> None:
        """Use ``redactor`` (a default one if None) for every record passing the filter."""
        super().__init__(name)
        self.redactor = redactor if redactor is not None else Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message with its redacted, fully formatted form."""
        if not super().filter(record):
            return False
        try:
            message = record.getMessage()
        except Exception:  # bad %-args: keep the data, but never let it bypass redaction
            message = f"{record.msg!s} {record.args!r}"
        record.msg = self.redactor.redact_text(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when set, so the traceback is emitted redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact_text(record.stack_info)
        return True
