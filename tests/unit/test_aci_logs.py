"""Our copy of an ACI container's log: overlap matching against a sliding tail window."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.executor.aci_logs import GAP_LINE, CopyUnreadable, LogCopy, splice
from shared.storage import BlobNotFound

KEY = b"k" * 32


@dataclass
class MemoryBlobs:
    """Just what LogCopy uses of a blob store."""

    blobs: dict[str, bytes] = field(default_factory=dict)

    def get(self, path: str) -> bytes:
        if path not in self.blobs:
            raise BlobNotFound(path)
        return self.blobs[path]

    def append(self, path: str, data: bytes) -> None:
        self.blobs[path] = self.blobs.get(path, b"") + data


def _read(blobs: MemoryBlobs, output: bytes, window: int, *, stopped: bool = False) -> LogCopy:
    """One poll: the tail ``window`` bytes of ``output`` added to the stored copy."""
    copy = LogCopy.load(blobs, KEY, "run", 1)  # type: ignore[arg-type]
    copy.extend(output[-window:], stopped=stopped)
    return copy


def test_a_window_that_has_not_slid_continues_the_copy() -> None:
    assert splice(b"a\nb\n", b"a\nb\nc\n", window_full=False) == (b"c\n", False)
    assert splice(b"", b"a\n", window_full=False) == (b"a\n", False)
    assert splice(b"", b"a\n", window_full=True) == (b"a\n", True)  # may have lost the start
    assert splice(b"a\n", b"", window_full=False) == (b"", False)


def test_a_slid_window_is_matched_on_its_overlap_even_cut_mid_line() -> None:
    seen = b"".join(b"line-%03d\n" % i for i in range(100))
    window = seen[-500:] + b"line-100\n"  # starts in the middle of a line
    assert splice(seen, window, window_full=True) == (b"line-100\n", False)
    assert splice(seen, b"line-900\n", window_full=True) == (b"line-900\n", True)  # a gap


def test_an_overlap_too_short_to_prove_anything_is_a_gap() -> None:
    # The copy ends "xxxx\n" and the window starts with the "xxxx\n" end of a line printed long
    # after it: bytes that match by chance, not a continuation.
    seen = b"".join(b"%05d " % i + b"x" * 40 + b"\n" for i in range(50))
    later = b"x" * 30 + b"\n" + b"".join(b"%05d " % i + b"x" * 40 + b"\n" for i in range(900, 990))
    assert splice(seen, later, window_full=True) == (later, True)
    short = b"tick\n"
    assert splice(short, b"tick\ntick\n", window_full=False) == (b"tick\n", False)
    assert splice(short, b"k\ntock\n", window_full=True) == (b"k\ntock\n", True)


def test_repeated_output_prefers_the_longest_overlap() -> None:
    # Ambiguous by nature (no offsets in the logs API): the smallest slide is assumed, so
    # repeats already copied are not copied again.
    assert splice(b"x\nx\nx\n", b"x\nx\nx\n", window_full=True) == (b"", False)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.sampled_from(["a", "bb", "tick", "ccc ccc", "é ü", "x" * 70]), max_size=200),
    polls=st.lists(st.integers(min_value=1, max_value=2000), max_size=40),
    window=st.integers(min_value=400, max_value=2000),
)
def test_nothing_is_lost_while_less_than_a_window_is_printed_between_reads(
    lines: list[str], polls: list[int], window: int
) -> None:
    # Each poll sees at most ``window`` bytes; between polls less than the window minus the
    # overlap that proves continuity appears. Lines are distinct (numbered) as real logs are.
    output = "".join(f"{i}:{text}\n" for i, text in enumerate(lines)).encode()
    blobs, upto, most = MemoryBlobs(), 0, window - 260
    for step in [*polls, *[most] * (len(output) // most + 1)]:
        upto = min(len(output), upto + min(step, most))
        _read(blobs, output[:upto], window)
    copy = _read(blobs, output, window, stopped=True)
    assert copy.gaps == 0
    assert copy.text() == output


def test_a_burst_larger_than_the_window_is_recorded_as_a_gap() -> None:
    blobs = MemoryBlobs()
    before = b"".join(b"early %03d\n" % i for i in range(10))
    _read(blobs, before, 1024)
    burst = before + b"".join(b"burst %05d\n" % i for i in range(500))
    copy = _read(blobs, burst, 1024)
    assert copy.gaps == 1
    text = copy.text()
    assert text.startswith(before + GAP_LINE + b"\n")
    assert text.endswith(burst[-1024:])
    later = burst + b"after\n"
    assert _read(blobs, later, 1024).text() == text + b"after\n"  # the copy goes on after it


def test_the_first_read_of_a_full_stopped_window_says_the_start_may_be_lost() -> None:
    output = b"".join(b"%05d\n" % i for i in range(5000))  # 30 KB: more than ACI keeps
    copy = _read(MemoryBlobs(), output, 16 * 1024, stopped=True)
    assert copy.gaps == 1 and copy.text().startswith(GAP_LINE)


def test_a_cut_line_is_ended_before_the_marker() -> None:
    blobs = MemoryBlobs()
    _read(blobs, b"half a li", 1024)
    copy = _read(blobs, b"half a li" + b"z" * 5000 + b"\nnext\n", 64)
    assert copy.text().startswith(b"half a li\n" + GAP_LINE + b"\n")


def test_the_copy_is_encrypted_and_bound_to_its_attempt() -> None:
    blobs = MemoryBlobs()
    _read(blobs, b"password=hunter2\n", 1024)
    (stored,) = blobs.blobs.values()
    assert b"hunter2" not in stored
    with pytest.raises(CopyUnreadable):
        LogCopy.load(blobs, b"x" * 32, "run", 1)  # type: ignore[arg-type]
    blobs.blobs["run/aci/attempt-2.bin"] = stored  # moved to another attempt: refused too
    with pytest.raises(CopyUnreadable):
        LogCopy.load(blobs, KEY, "run", 2)  # type: ignore[arg-type]


def test_a_damaged_copy_is_reported_not_misread() -> None:
    blobs = MemoryBlobs()
    _read(blobs, b"one\n", 1024)
    _read(blobs, b"one\ntwo\n", 1024)
    (path,) = blobs.blobs
    blobs.blobs[path] = blobs.blobs[path][:-3]  # a torn last append
    with pytest.raises(CopyUnreadable):
        LogCopy.load(blobs, KEY, "run", 1)  # type: ignore[arg-type]
