"""Recall and false-positive rate on the labelled corpus in tests/redaction_corpus/."""

from __future__ import annotations

import json
from pathlib import Path

from shared.redaction import Redactor

CORPUS = Path(__file__).resolve().parents[1] / "redaction_corpus"
# Floors sit a little under what the library achieves today (printed by the test), so a
# regression fails while small corpus additions do not. Raise them as detection improves.
RECALL_FLOOR = 0.97
KIND_ACCURACY_FLOOR = 0.97
FP_RATE_CEILING = 0.02


def load(name: str) -> list[dict[str, object]]:
    with (CORPUS / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def score(redactor: Redactor) -> dict[str, float]:
    """Return recall (every secret gone), kind accuracy and FP rate (any change to a negative)."""
    positives, negatives = load("positives.jsonl"), load("negatives.jsonl")
    caught = kinds_ok = 0
    for case in positives:
        out = redactor.redact_text(str(case["text"]))
        if all(str(s) not in out for s in case["secrets"]):  # type: ignore[attr-defined]
            caught += 1
            kinds_ok += all(f"[REDACTED:{k}]" in out for k in case["kinds"])  # type: ignore[attr-defined]
    changed = sum(redactor.redact_text(str(c["text"])) != c["text"] for c in negatives)
    return {
        "positives": len(positives),
        "negatives": len(negatives),
        "recall": caught / len(positives),
        "kind_accuracy": kinds_ok / len(positives),
        "fp_rate": changed / len(negatives),
    }


def test_corpus_is_big_enough_and_labelled() -> None:
    positives, negatives = load("positives.jsonl"), load("negatives.jsonl")
    assert len(positives) >= 150 and len(negatives) >= 150
    for case in positives + negatives:
        assert case["source"], case
    for case in positives:
        assert case["kinds"] and all(s in case["text"] for s in case["secrets"]), case  # type: ignore[attr-defined]


def test_recall_and_false_positive_rate() -> None:
    figures = score(Redactor())
    print(f"\nredaction corpus: {figures}")
    assert figures["recall"] >= RECALL_FLOOR
    assert figures["kind_accuracy"] >= KIND_ACCURACY_FLOOR
    assert figures["fp_rate"] <= FP_RATE_CEILING
