"""Line-oriented redaction of chunked streams, and a logging filter.

The output of ``StreamRedactor`` depends only on the text, never on how it was chunked:
lines are redacted as whole lines (many at a time, which is the same as one at a time because
no detector crosses a newline), PEM blocks are held until their END line, and a line longer
than ``max_line_chars`` is cut at fixed offsets with an overlap window of context on both sides
so a secret straddling a cut is still found.
"""

from __future__ import annotations

import codecs
import logging
import re

from .core import Redactor
from .detectors import mask

ADD_MASK = "::add-mask::"
_BEGIN_RE = re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_END_RE = re.compile(r"-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
# What the inside of a PEM block looks like: base64 lines and RFC 1421 headers. Short lines
# are not swallowed, so ordinary words after a runaway block are kept.
_KEY_BODY_RE = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}|(?:Proc-Type|DEK-Info|Version|Comment):.*|")


class StreamRedactor:
    """Redact a text stream arriving in chunks, emitting complete redacted lines.

    A line ``::add-mask::VALUE`` (the GitHub Actions convention) registers VALUE as a secret
    on the redactor, so it is masked from then on in every stream sharing that redactor; the
    line itself is dropped.
    """

    def __init__(
        self,
        redactor: Redactor | None = None,
        *,
        max_block_lines: int = 200,
        max_block_bytes: int = 64 * 1024,
        max_line_chars: int = 1024 * 1024,
        overlap_chars: int = 8192,
    ) -> None:
        """Wrap ``redactor`` (a default one if None) with PEM-block and line-length caps."""
        if max_line_chars < 1:
            raise ValueError("max_line_chars must be positive")
        self.redactor = redactor if redactor is not None else Redactor()
        self.max_block_lines = max_block_lines
        self.max_block_bytes = max_block_bytes
        self.max_line_chars = max_line_chars
        self.overlap_chars = min(overlap_chars, max_line_chars)
        self._partial: list[str] = []
        self._partial_len = 0
        self._left = ""  # context before the partial buffer once a long line has been cut
        self._cut = False  # the current line is long and pieces of it were already emitted
        self._block: list[str] | None = None  # lines of an open PEM private-key block
        self._block_bytes = 0
        self._discarding = False  # inside an over-long key block that was already masked
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: str) -> list[str]:
        """Accept a chunk and return the redacted lines it completed (without newlines)."""
        return _lines(self._feed(chunk))

    def feed_bytes(self, chunk: bytes) -> list[str]:
        """Accept raw bytes; invalid UTF-8 becomes U+FFFD and never loses what follows."""
        return self.feed(self._decoder.decode(chunk))

    def feed_text(self, chunk: str | bytes) -> str:
        """Like ``feed`` (or ``feed_bytes``), but return the lines as text, each ending in "\\n".

        Cheaper than joining what ``feed`` returns: many lines come back as one piece.
        """
        if isinstance(chunk, bytes):
            chunk = self._decoder.decode(chunk)
        return _text(self._feed(chunk))

    def close(self) -> list[str]:
        """Flush the unterminated last line and any open key block."""
        return _lines(self._close())

    def close_text(self) -> str:
        """Like ``close``, as text (see ``feed_text``)."""
        return _text(self._close())

    # Internally output is a list of pieces: each is one or more complete lines joined by
    # newlines (a whole batch of lines is redacted, and kept, as one string).

    def _feed(self, chunk: str) -> list[str]:
        if not chunk:
            return []
        self._partial.append(chunk)
        self._partial_len += len(chunk)
        if "\n" not in chunk:
            if self._partial_len < self.max_line_chars + self.overlap_chars:
                return []
            # Bound memory on output that never ends a line: emit the pieces whose right
            # context is complete, keeping the rest (and some left context) for later.
            out = self._flush_pending()
            return out + self._cut_pieces("".join(self._partial), final=False)
        text = "".join(self._partial)
        cut = text.rfind("\n")
        rest = text[cut + 1 :]
        self._partial = [rest] if rest else []
        self._partial_len = len(rest)
        return self._process(text[:cut])

    def _close(self) -> list[str]:
        out = self._feed(self._decoder.decode(b"", final=True))
        if self._partial or self._cut:
            text = "".join(self._partial)
            self._partial, self._partial_len = [], 0
            out += self._process(text)
        if self._block is not None:
            out += self._flush_block()
        self._discarding = False
        return out

    # --- whole lines ----------------------------------------------------------------------

    def _process(self, head: str) -> list[str]:
        """Redact ``head``, the complete lines received (joined by newlines, without the last)."""
        out: list[str] = []
        if self._cut:
            # The first line finishes a long line whose earlier pieces were already emitted.
            first, sep, head = head.partition("\n")
            out += self._cut_pieces(first, final=True)
            if not sep:
                return out
        if (
            self._block is None
            and not self._discarding
            and len(head) <= self.max_line_chars
            and "PRIVATE KEY" not in head
            and ADD_MASK not in head
        ):
            # The common case: one redaction pass over many lines, kept as one piece.
            out.append(self.redactor.redact_text(head))
            return out
        return out + self._process_lines(head.split("\n"))

    def _process_lines(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        batch: list[str] = []
        for line in lines:
            if len(line) > self.max_line_chars:
                # Long lines are never part of a key block, the same whether they arrived
                # whole or were cut while streaming.
                out += self._redact_lines(batch)
                batch = []
                self._flush_pending(out)
                out += self._cut_pieces(line, final=True)
                continue
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
                    line = line[end.end() :]
                elif _KEY_BODY_RE.fullmatch(line.strip()):
                    continue
                else:
                    self._discarding = False
            stripped = line.lstrip()
            if stripped.startswith(ADD_MASK):
                # Lines before the marker are redacted with the secrets known before it.
                out += self._redact_lines(batch)
                batch = []
                value = stripped[len(ADD_MASK) :].strip()
                if value:
                    self.redactor.add_secret(value)
                continue
            if "PRIVATE KEY" in line and self._opens_block(line):
                out += self._redact_lines(batch)
                batch = []
                self._block = [line]
                self._block_bytes = len(line) + 1
                continue
            batch.append(line)
        out += self._redact_lines(batch)
        return out

    def _redact_lines(self, lines: list[str]) -> list[str]:
        # One call per batch, not per line: the per-call overhead dominates on short lines.
        if not lines:
            return []
        return [self.redactor.redact_text("\n".join(lines))]

    def _flush_block(self) -> list[str]:
        block, self._block, self._block_bytes = self._block or [], None, 0
        return self._redact_lines(block)

    def _flush_pending(self, out: list[str] | None = None) -> list[str]:
        """Close key-block state before a long line (see ``_process_lines``)."""
        flushed = self._flush_block() if self._block is not None else []
        self._discarding = False
        if out is not None:
            out += flushed
        return flushed

    @staticmethod
    def _opens_block(line: str) -> bool:
        begins = list(_BEGIN_RE.finditer(line))
        return bool(begins) and _END_RE.search(line, begins[-1].end()) is None

    # --- long lines -----------------------------------------------------------------------

    def _cut_pieces(self, text: str, final: bool) -> list[str]:
        """Emit ``max_line_chars`` pieces of the current long line from ``text``.

        Each piece is redacted with ``overlap_chars`` of context on each side, so the windows
        (and the output) are the same however the line arrived. Unless ``final``, text whose
        right context is still incomplete is kept for the next call.
        """
        size, over = self.max_line_chars, self.overlap_chars
        out: list[str] = []
        pos = 0
        keep = size + over if not final else size + 1
        while len(text) - pos >= keep:
            window = self._left + text[pos : pos + size + over]
            out.append(self.redactor.redact_window(window, len(self._left), len(self._left) + size))
            self._left = text[pos + size - over : pos + size]
            self._cut = True
            pos += size
        if final:
            if pos < len(text) or not self._cut:
                window = self._left + text[pos:]
                out.append(self.redactor.redact_window(window, len(self._left), len(window)))
            self._left, self._cut = "", False
            return out
        rest = text[pos:]
        self._partial, self._partial_len = [rest], len(rest)
        return out


def _lines(pieces: list[str]) -> list[str]:
    if len(pieces) == 1:
        return pieces[0].split("\n")
    return [line for piece in pieces for line in piece.split("\n")]


def _text(pieces: list[str]) -> str:
    if not pieces:
        return ""
    pieces.append("")  # one join copies each piece once, with the final newline
    return "\n".join(pieces)


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
