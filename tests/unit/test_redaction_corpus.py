"""Recall and false-positive rate on the labelled corpus in tests/redaction_corpus/."""

from __future__ import annotations

from shared.redaction import Redactor
from tests.redaction_corpus.scoring import leaks, load, score

# Floors sit a little under what the library achieves today (printed by the test), so a
# regression fails while small corpus additions do not. Raise them as detection improves.
RECALL_FLOOR = 0.98
KIND_ACCURACY_FLOOR = 0.97
FP_RATE_CEILING = 0.01


def test_corpus_is_big_enough_and_labelled() -> None:
    positives, negatives = load("positives"), load("negatives")
    assert len(positives) >= 400 and len(negatives) >= 400
    for case in positives + negatives:
        assert case["source"], case
    for case in positives:
        assert case["kinds"] and all(s in case["text"] for s in case["secrets"]), case


def test_recall_and_false_positive_rate() -> None:
    figures = score(Redactor().redact_text)
    print(f"\nredaction corpus: {figures} recall={figures.recall:.3f} fp={figures.fp_rate:.3f}")
    assert figures.recall >= RECALL_FLOOR
    assert figures.kind_accuracy >= KIND_ACCURACY_FLOOR
    assert figures.fp_rate <= FP_RATE_CEILING


def test_a_masked_prefix_does_not_count_as_caught() -> None:
    token = "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"
    assert leaks(token, token, "[REDACTED]_wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINUx")
    assert not leaks(token, token, "[REDACTED:github_token]")
    # Words of the context are not pieces of the secret: password=testpassword
    text = "password=testpassword&user=x"
    assert not leaks("testpassword", text, "password=[REDACTED:secret_assignment]&user=x")
