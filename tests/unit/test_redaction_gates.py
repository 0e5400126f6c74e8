"""Gated redaction of long texts finds exactly what line-by-line redaction finds.

Texts of ``_GATED_MIN_CHARS`` or more run each detector only on the lines where its gate
matches; shorter texts (a single line here) run every detector. Both must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.redaction import Redactor
from shared.redaction.core import _GATED_MIN_CHARS

CORPUS = Path(__file__).resolve().parents[1] / "redaction_corpus"
LINES = sorted(
    {
        text
        for name in ("positives.jsonl", "negatives.jsonl")
        for raw in (CORPUS / name).read_text(encoding="utf-8").splitlines()
        if raw.strip() and "\n" not in (text := json.loads(raw)["text"])
    }
    | {
        "--password hunter2x --user root",
        "[REDACTED:email] and bob@example.com",
        "GB82 WEST 1234 5698 7654 32 / 415.555.0134 / (415) 555-0134 / 078-05-1120",
        "call (415) 555.0134 or (212)555.0199 today",
        "card 4111-1111-1111-1111 and 5500 0000 0000 0004 and 378282246310005",
        "call 01 23 45 67 89 or 020 7946 0958 or 07700 900123 or +44 20 7946 0958",
        "naïve ünïcode — 4111 1111 1111 1111 ✓ bøb@example.com İstanbul 078-05-1120",
    }
)
FILLER = "2024-11-05T10:43:12.123Z INFO  [main] worker committed offset 1732617600000 ok"


def line_by_line(redactor: Redactor, lines: list[str]) -> list[str]:
    assert all(len(line) < _GATED_MIN_CHARS for line in lines)
    return [redactor.redact_text(line) for line in lines]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=40), st.integers(0, 60))
def test_gated_blocks_equal_line_by_line(picked: list[str], filler: int) -> None:
    lines = [*picked, *[FILLER] * filler]
    while sum(map(len, lines)) < _GATED_MIN_CHARS:
        lines.append(FILLER)
    joined, single = Redactor(), Redactor()
    assert joined.redact_text("\n".join(lines)).split("\n") == line_by_line(single, lines)
    assert joined.stats == single.stats


def test_every_corpus_line_in_one_block() -> None:
    joined, single = Redactor(), Redactor()
    assert joined.redact_text("\n".join(LINES)).split("\n") == line_by_line(single, LINES)
    assert joined.stats == single.stats


def test_option_line_starting_a_line_is_masked_anywhere_in_a_block() -> None:
    block = "\n".join([FILLER] * 40 + ["--password hunter2x --user root"])
    assert (
        Redactor()
        .redact_text(block)
        .endswith("--password [REDACTED:secret_assignment] --user root")
    )
