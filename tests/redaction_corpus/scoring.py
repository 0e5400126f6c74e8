"""Score a redaction function on the labelled corpus: recall, kind accuracy, false positives.

A positive counts as caught only when no 8-character piece of any of its secrets survives
(beyond the copies its context already holds), so masking a token's prefix ("ghp") and leaving
its body does not count. A negative counts as a false positive when the text changes at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent
_MASK_RE = re.compile(r"\[REDACTED(?::[a-z0-9_]+)?\]")
_WINDOW = 8


def load(name: str) -> list[dict[str, Any]]:
    """Return the cases of ``positives`` or ``negatives``."""
    with (CORPUS / f"{name}.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def leaks(secret: str, text: str, out: str) -> bool:
    """Tell whether a piece of ``secret`` (from ``text``) is still readable in ``out``."""
    out = _MASK_RE.sub("\0", out)  # "[REDACTED:url_password]" must not read as "password"
    context = text.replace(secret, "\0")
    width = min(len(secret), _WINDOW)
    pieces = {secret[i : i + width] for i in range(len(secret) - width + 1)}
    return any(out.count(piece) > context.count(piece) for piece in pieces)


@dataclass(frozen=True)
class Score:
    positives: int
    negatives: int
    caught: int
    kinds_ok: int
    changed: int

    @property
    def recall(self) -> float:
        return self.caught / self.positives

    @property
    def kind_accuracy(self) -> float:
        return self.kinds_ok / self.positives

    @property
    def fp_rate(self) -> float:
        return self.changed / self.negatives


def score(redact: Callable[[str], str], *, check_kinds: bool = True) -> Score:
    """Run ``redact`` over the corpus; kinds are checked in our ``[REDACTED:<kind>]`` masks."""
    positives, negatives = load("positives"), load("negatives")
    caught = kinds_ok = 0
    for case in positives:
        text = case["text"]
        out = redact(text)
        if any(leaks(secret, text, out) for secret in case["secrets"]):
            continue
        caught += 1
        if check_kinds:
            kinds_ok += all(f"[REDACTED:{kind}]" in out for kind in case["kinds"])
    changed = sum(redact(case["text"]) != case["text"] for case in negatives)
    return Score(len(positives), len(negatives), caught, kinds_ok, changed)
