"""StreamRedactor: chunking never changes the output; add-mask, long lines, raw bytes."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.redaction import Redactor, StreamRedactor

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "-----END RSA PRIVATE KEY-----"
)
LINES = [
    "plain line",
    "mail bob@example.com now",
    "password=hunter22&x=1",
    "Authorization: Bearer abc123def456ghi789jkl",
    "using AKIAIOSFODNN7EXAMPLE",
    "card 4111 1111 1111 1111 ok",
    "::add-mask::opensesame99",
    "say opensesame99 twice opensesame99",
    PEM,
    "-----BEGIN PRIVATE KEY-----",
    "token: expected 3 segments",
    "naïve ünïcode — line ✓",
    "",
    "call +44 20 7946 0958",
]


def run(text: str, cuts: list[int], **kwargs: int) -> tuple[list[str], dict[str, int]]:
    redactor = Redactor()
    stream = StreamRedactor(redactor, **kwargs)
    out: list[str] = []
    pos = 0
    for cut in sorted(set(cuts)):
        out += stream.feed(text[pos:cut])
        pos = cut
    out += stream.feed(text[pos:])
    out += stream.close()
    return out, dict(redactor.stats)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(LINES), min_size=1, max_size=12),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_output_does_not_depend_on_chunking(lines: list[str], cuts: list[int]) -> None:
    text = "\n".join(lines) + "\n"
    cuts = [c % (len(text) + 1) for c in cuts]
    assert run(text, cuts) == run(text, [])


@settings(max_examples=40, deadline=None)
@given(
    st.text(alphabet="ab =:@.\nAKIOSFDN7EXMPLtokenpsw", max_size=300),
    st.lists(st.integers(min_value=0, max_value=300), max_size=8),
)
def test_long_lines_cut_the_same_way_in_any_chunking(text: str, cuts: list[int]) -> None:
    cuts = [c % (len(text) + 1) for c in cuts]
    small = {"max_line_chars": 24, "overlap_chars": 8}
    assert run(text, cuts, **small) == run(text, [], **small)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([line for line in LINES if "PRIVATE" not in line]), max_size=10))
def test_redacting_joined_lines_equals_line_by_line(lines: list[str]) -> None:
    lines = [line for line in lines if not line.startswith("::")]
    redactor = Redactor()
    joined = redactor.redact_text("\n".join(lines)).split("\n") if lines else []
    assert joined == [redactor.redact_text(line) for line in lines]


def test_add_mask_registers_the_value_and_drops_the_line() -> None:
    redactor = Redactor()
    stream = StreamRedactor(redactor)
    out = stream.feed("before s3cr3t-value\n  ::add-mask::s3cr3t-value\nafter s3cr3t-value\n")
    assert out == ["before s3cr3t-value", "after [REDACTED:secret_value]"]
    # the value is now a secret of the shared redactor: other streams and calls mask it too
    assert StreamRedactor(redactor).feed("x s3cr3t-value\n") == ["x [REDACTED:secret_value]"]
    assert redactor.redact_text("s3cr3t-value") == "[REDACTED:secret_value]"


def test_add_secret_masks_encoded_forms() -> None:
    redactor = Redactor()
    redactor.add_secret("correct-horse")
    redactor.add_secret("correct-horse")  # idempotent
    assert redactor.redact_text("a correct-horse b Y29ycmVjdC1ob3JzZQ==") == (
        "a [REDACTED:secret_value] b [REDACTED:secret_value]"
    )


def test_secret_straddling_a_long_line_cut_is_masked() -> None:
    key = "AKIAIOSFODNN7EXAMPLE"
    line = "x" * 90 + " " + key + " " + "y" * 90
    for size in (60, 95, 100, 105):
        out, stats = run(line + "\n", [37, 101], max_line_chars=size, overlap_chars=32)
        assert "".join(out).count("IOSFODNN") == 0, size
        assert len(out) == -(-len(line) // size)
        assert stats == {"aws_access_key_id": 1}


def test_long_line_without_newline_is_emitted_in_bounded_pieces() -> None:
    stream = StreamRedactor(Redactor(), max_line_chars=100, overlap_chars=10)
    out: list[str] = []
    for _ in range(50):
        out += stream.feed("z" * 37)
    assert all(len(piece) == 100 for piece in out) and len(out) >= 17
    assert sum(map(len, out + stream.close())) == 50 * 37


def test_feed_bytes_decodes_split_and_invalid_utf8() -> None:
    data = "héllo bob@example.com ✓\n".encode() + b"bad \xff\xfe byte token=abc123\nend"
    stream = StreamRedactor(Redactor())
    out: list[str] = []
    for i in range(len(data)):  # one byte at a time splits the multi-byte characters
        out += stream.feed_bytes(data[i : i + 1])
    out += stream.close()
    assert out == [
        "héllo [REDACTED:email] ✓",
        "bad \ufffd\ufffd byte token=[REDACTED:secret_assignment]",
        "end",
    ]


def test_truncated_multibyte_at_close_becomes_replacement_char() -> None:
    stream = StreamRedactor(Redactor())
    assert stream.feed_bytes(b"abc \xe2\x9c") == []
    assert stream.close() == ["abc \ufffd"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(LINES), min_size=1, max_size=12),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    st.booleans(),
)
def test_text_output_equals_the_joined_lines(lines: list[str], cuts: list[int], tail: bool) -> None:
    data = ("\n".join(lines) + ("\n" if tail else "")).encode()
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    expected, _ = run(data.decode(), [])
    stream = StreamRedactor(Redactor())
    out, pos = "", 0
    for cut in [*cuts, len(data)]:
        out += stream.feed_text(data[pos:cut])  # bytes, cut anywhere (even inside a character)
        pos = cut
    out += stream.close_text()
    assert out == "".join(line + "\n" for line in expected)


def test_redacting_leaves_no_garbage_for_the_cycle_collector() -> None:
    # A view left in a reference cycle holds megabytes of text until the cyclic collector runs;
    # an executor redacting a flood kept hundreds of MiB that way.
    text = "".join(f"{i:08d} mail user{i}@example.com {'x' * 40}\n" for i in range(5000))
    redactor = Redactor()
    stream = StreamRedactor(redactor)
    gc.collect()
    gc.disable()
    try:
        redactor.redact_text(text)
        redactor.redact_text("one short line for user@example.com")
        stream.feed(text)
        stream.feed_bytes(text.encode())
        assert gc.collect() == 0
    finally:
        gc.enable()
