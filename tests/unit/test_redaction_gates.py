"""Gated redaction finds exactly what running every detector everywhere finds.

Texts of ``_LINE_GATING_MIN_CHARS`` or more run each detector only on the lines where its gate
matches; shorter texts run a detector only if its gate matches somewhere. Both must agree with
``find(text, gated=False)``, which runs every detector over the whole text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.redaction import Redactor, core
from shared.redaction.core import _LINE_GATING_MIN_CHARS

CORPUS = Path(__file__).resolve().parents[1] / "redaction_corpus"
LINES = sorted(
    {
        text
        for name in ("positives.jsonl", "negatives.jsonl")
        for raw in (CORPUS / name).read_text(encoding="utf-8").splitlines()
        if raw.strip()
        and "\n" not in (text := json.loads(raw)["text"])
        and len(text) < _LINE_GATING_MIN_CHARS
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
    assert all(len(line) < _LINE_GATING_MIN_CHARS for line in lines)
    return [redactor.redact_text(line) for line in lines]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=40), st.integers(0, 60))
def test_gated_blocks_equal_line_by_line(picked: list[str], filler: int) -> None:
    lines = [*picked, *[FILLER] * filler]
    while sum(map(len, lines)) < _LINE_GATING_MIN_CHARS:
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


PEM_KEYS = [
    text
    for raw in (CORPUS / "positives.jsonl").read_text(encoding="utf-8").splitlines()
    if raw.strip() and "PRIVATE KEY-----\n" in (text := json.loads(raw)["text"])
]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(LINES + PEM_KEYS), min_size=1, max_size=60),
    st.integers(0, 30),
    st.sampled_from([3000, 5000, 9000]),
)
def test_texts_in_blocks_equal_ungated(picked: list[str], filler: int, block: int) -> None:
    # Small blocks put many block boundaries, some inside private keys and long lines.
    text = "\n".join([*[FILLER] * filler, *picked, *[FILLER] * filler])
    redactor = Redactor()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core, "_BLOCK_CHARS", block)
        blocked = redactor.find(text)
    assert blocked == redactor.find(text, gated=False)


def test_private_key_across_a_block_boundary_is_masked_whole() -> None:
    before = [FILLER] * 30  # about 2400 characters: the key starts in the first block
    text = "\n".join([*before, PEM_KEYS[0], *before])
    redactor = Redactor()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core, "_BLOCK_CHARS", 3000)
        found = redactor.find(text)
    key = text.index("-----BEGIN")
    assert (key, key + len(PEM_KEYS[0]), "private_key") in found
    assert found == redactor.find(text, gated=False)


def test_every_corpus_line_gated_equals_ungated() -> None:
    redactor = Redactor()
    for line in LINES:
        assert redactor.find(line) == redactor.find(line, gated=False), line


def test_lines_beside_a_run_of_one_letter_gated_equal_ungated() -> None:
    # A run of u, x or y is one run of the token gate's first character: texts holding one
    # are searched by the gate's split parts (detectors.Gate.split), which must miss nothing.
    redactor = Redactor()
    for run in ("x" * 1014, "uyx" * 6):
        for line in LINES:
            for text in (f"{run} {line}", f"{line}\n{run}", f"{run}{line}{run}"):
                assert redactor.find(text) == redactor.find(text, gated=False), text
    block = "\n".join(["x" * 1014, *LINES])
    assert redactor.find(block) == redactor.find(block, gated=False)


# Digits, separators and capitals in every arrangement: cards, SSNs, phone numbers and IBANs
# written in ways the number gates must not miss, next to dates, times, UUIDs and decimals.
NUMBER_PARTS = st.sampled_from(
    [
        *"0123456789",
        " ",
        "-",
        ".",
        "(",
        ")",
        "+",
        "GB",
        "DE",
        "NL",
        "4111",
        "078",
        "415",
        "555",
        "0134",
        "2024-11-05",
        "10:43:12",
        "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(NUMBER_PARTS, max_size=40))
def test_number_gates_miss_nothing(parts: list[str]) -> None:
    line = "".join(parts)
    redactor = Redactor()
    assert redactor.find(line) == redactor.find(line, gated=False)
    block = "\n".join([FILLER] * 30 + [line])
    assert redactor.find(block) == redactor.find(block, gated=False)


def _luhn_complete(body: str) -> str:
    """Return ``body`` with the digit appended that makes it pass the Luhn check."""
    for last in "0123456789":
        digits = body + last
        total = sum(
            (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d
            for i, d in enumerate(int(ch) for ch in reversed(digits))
        )
        if total % 10 == 0:
            return digits
    raise AssertionError(body)


def _iban_complete(country: str, bban: str) -> str:
    """Return a valid IBAN for ``country`` and ``bban`` (check digits computed)."""
    number = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def _group(value: str, sizes: tuple[int, ...], sep: str) -> str:
    out, pos = [], 0
    for size in sizes:
        out.append(value[pos : pos + size])
        pos += size
    return sep.join(out)


@st.composite
def formatted_numbers(draw: st.DrawFn) -> str:
    """Draw a card, SSN, phone number or IBAN written in one of the ways the detectors know."""
    digits = st.text("0123456789", min_size=20, max_size=20)
    d = draw(digits)
    kind = draw(st.sampled_from(["card", "amex", "uatp", "ssn", "us", "national", "iban"]))
    sep = draw(st.sampled_from([" ", "-"]))
    if kind == "card":
        lead = draw(st.sampled_from(["4", "51", "55", "2221", "6011", "35", "5019", "6759"]))
        card = _luhn_complete((lead + d)[:15])
        return draw(st.sampled_from([card, _group(card, (4, 4, 4, 4), sep)]))
    if kind == "uatp":
        return _luhn_complete("1" + d[:13])
    if kind == "amex":
        card = _luhn_complete("37" + d[:12])
        return draw(st.sampled_from([card, _group(card, (4, 6, 5), sep)]))
    if kind == "ssn":
        ssn_sep = draw(st.sampled_from(["-", " ", "."]))
        serial = d[2:6].replace("0000", "1234")
        return (
            f"{draw(st.integers(1, 665)):03d}{ssn_sep}{d[:2].replace('00', '12')}{ssn_sep}{serial}"
        )
    if kind == "us":
        area, mid, last = f"{draw(st.integers(200, 999))}", d[:3], d[3:7]
        return draw(
            st.sampled_from(
                [
                    f"({area}) {mid}-{last}",
                    f"({area}){mid}-{last}",
                    f"({area}) {mid}.{last}",
                    f"({area}){mid}.{last}",
                    f"{area}-{mid}-{last}",
                    f"{area}.{mid}.{last}",
                    f"1-{area}-{mid}-{last}",
                    f"1 ({area}) {mid}-{last}",
                    f"1.{area}.{mid}.{last}",
                ]
            )
        )
    if kind == "national":
        n = "0" + draw(st.sampled_from("123456789")) + d[:9]
        return draw(
            st.sampled_from(
                [
                    _group(n[:10], (2, 2, 2, 2, 2), " "),
                    _group(n[:11], (3, 4, 4), " "),
                    _group(n[:11], (5, 6), " "),
                    _group(n[:11], (5, 3, 3), " "),
                    _group(n[:9], (2, 7), "-"),  # Israel 09-7625400
                ]
            )
        )
    country, bban = draw(
        st.sampled_from(
            [("DE", d[:18]), ("GB", "WEST" + d[:14]), ("NL", "ABNA" + d[:10]), ("FR", d + "123")]
        )
    )
    iban = _iban_complete(country, bban)
    return draw(st.sampled_from([iban, " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))]))


@settings(max_examples=300, deadline=None)
@given(
    formatted_numbers(),
    st.sampled_from(["", " ", "x ", "call ", "id=", '"', "(", "2024-11-05 10:43:12,123 "]),
    st.sampled_from(["", " ", ".", ",", " ok", '"', ")", "\t1"]),
)
def test_number_gates_pass_every_written_form(number: str, before: str, after: str) -> None:
    line = before + number + after
    redactor = Redactor()
    found = redactor.find(line, gated=False)
    assert redactor.find(line) == found
    block = "\n".join([FILLER] * 30 + [line])
    assert redactor.find(block) == redactor.find(block, gated=False)
