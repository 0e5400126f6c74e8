"""What a security reviewer checks in the redaction library."""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import quote

import pytest

from shared.redaction import RedactingFilter, Redactor, StreamRedactor, redact_text

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)

# (log line, kind, sensitive text that must disappear, surrounding text that must survive)
CASES = [
    (
        "user alice.smith+ci@example.co.uk signed in",
        "email",
        "alice.smith+ci@example.co.uk",
        "user ",
    ),
    ("callback to +44 20 7946 0958 failed", "phone", "+44 20 7946 0958", "callback to "),
    ("sms sent to +14155552671 ok", "phone", "+14155552671", "sms sent to "),
    ("contact (555) 123-4567 after 5pm", "phone", "(555) 123-4567", "after 5pm"),
    ("contact 555-123-4567 after 5pm", "phone", "555-123-4567", "after 5pm"),
    ("charged card 4111 1111 1111 1111 for $5", "card", "4111 1111 1111 1111", "for $5"),
    ("charged card 4111-1111-1111-1111 for $5", "card", "4111-1111-1111-1111", "for $5"),
    ("pan=5555555555554444 status=ok", "card", "5555555555554444", "status=ok"),
    ("amex 3782 822463 10005 declined", "card", "3782 822463 10005", "declined"),
    (
        "payout to DE89 3704 0044 0532 0130 00 queued",
        "iban",
        "DE89 3704 0044 0532 0130 00",
        "queued",
    ),
    ("payout to GB82WEST12345698765432 queued", "iban", "GB82WEST12345698765432", "queued"),
    ("applicant ssn 123-45-6789 verified", "ssn", "123-45-6789", "verified"),
    (f"session {JWT} expired", "jwt", JWT, "expired"),
    (
        "Authorization: Bearer abc123def456ghi789jkl",
        "bearer",
        "abc123def456ghi789jkl",
        "Authorization: Bearer ",
    ),
    (
        "Authorization: Basic dXNlcjpodW50ZXIy",
        "bearer",
        "dXNlcjpodW50ZXIy",
        "Authorization: Basic ",
    ),
    (
        "using key AKIAIOSFODNN7EXAMPLE for s3",
        "aws_access_key_id",
        "AKIAIOSFODNN7EXAMPLE",
        "for s3",
    ),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key = ",
    ),
    (
        "clone with ghp_1234567890abcdefghijABCDEFGHIJ123456 done",
        "github_token",
        "ghp_1234567890abcdefghijABCDEFGHIJ123456",
        "done",
    ),
    (
        "pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "github_token",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "pat ",
    ),
    (
        "slack xoxb-123456789012-abcdefghijklmn posted",
        "slack_token",
        "xoxb-123456789012-abcdefghijklmn",
        "posted",
    ),
    (
        "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc ok",
        "stripe_key",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        " ok",
    ),
    (
        "maps AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI ok",
        "google_api_key",
        "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI",
        " ok",
    ),
    (
        f"loaded {PEM} from env",
        "private_key",
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0t",
        "from env",
    ),
    (
        "connecting to postgres://app:S3cr3t!pw@db.internal:5432/app",
        "url_password",
        "S3cr3t!pw",
        "postgres://app:",
    ),
    (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4"
        "OTA=;EndpointSuffix=core.windows.net",
        "azure_storage_key",
        "Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4OTA=",
        ";EndpointSuffix=core.windows.net",
    ),
    (
        "GET https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=Ab%2Bcd3EfGh%3D&se=2024 200",
        "azure_storage_key",
        "Ab%2Bcd3EfGh%3D",
        "&se=2024 200",
    ),
    ("db password=hunter22 host=db", "secret_assignment", "hunter22", "host=db"),
    (
        'config: {"client_secret": "s3cr3t value", "user": "bob"}',
        "secret_assignment",
        "s3cr3t value",
        '"user": "bob"',
    ),
    ("env DB_PASSWORD=xyzzy42 PORT=5432", "secret_assignment", "xyzzy42", "PORT=5432"),
    ("env PGPASSWORD='quoted pw' psql", "secret_assignment", "quoted pw", " psql"),
    ("GET /cb?token=abcdef123&page=2 200", "secret_assignment", "abcdef123", "&page=2 200"),
    ("x-api-key: k-12345-abcde sent", "secret_assignment", "k-12345-abcde", "x-api-key: "),
    ("apikey=AbCdEf123 passwd=pw12 pwd=pw34", "secret_assignment", "AbCdEf123", "passwd="),
]


@pytest.mark.parametrize(
    ("line", "kind", "secret", "context"), CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)]
)
def test_each_kind_is_masked_and_context_survives(
    line: str, kind: str, secret: str, context: str
) -> None:
    redactor = Redactor()
    out = redactor.redact_text(line)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out
    assert context in out
    assert redactor.stats[kind] >= 1


@pytest.mark.parametrize(
    "line",
    [
        "charged card 4111 1111 1111 1112 for $5",  # bad Luhn digit
        "pan=5555555555554445",
        "payout to DE89 3704 0044 0532 0130 01 queued",  # bad IBAN check digits
        "payout to GB83WEST12345698765432 queued",
        '{"ts": 1732617600000, "level": "info"}',  # millisecond timestamp
        "event_id=1732617600000123 trace=1234567890123456789",
        "container 13d6ac20a20d68a6996c2701488046138bb121 started",  # Luhn-valid run inside hex
        "ssn 666-12-3456 000-12-3456 912-34-5678 123-00-4567 123-45-0000",  # invalid SSN ranges
        "2024-11-26T10:43:12.123+01:00 version 1.2.3 took 12.5ms pid=12345",
        "order 123-4567 rows 10.123.4567 build 100-200-3000",
        "max_tokens=512 token_count=7 tokens: 40 bypass=true",
        "Authorization header missing; using Bearer authentication with Basic fallback",
        "connecting to 10.0.0.12 and fe80::1 on port 8080",  # IPs are kept by default
    ],
)
def test_lookalikes_are_not_masked(line: str) -> None:
    assert Redactor().redact_text(line) == line


def test_bearer_jwt_is_one_mask_not_two() -> None:
    out = Redactor().redact_text(f"Authorization: Bearer {JWT}")
    assert out.count("[REDACTED:") == 1
    assert out.startswith("Authorization: Bearer [REDACTED:")


def test_secret_inside_assignment_becomes_one_whole_mask() -> None:
    out = Redactor(secrets=["hunter22"]).redact_text("password=hunter22xyz next")
    assert out == "password=[REDACTED:secret_assignment] next"


def test_ip_addresses_masked_when_not_kept() -> None:
    out = Redactor(keep_ip_addresses=False).redact_text(
        "peer 10.0.0.12:8080 via fe80::1 and 2001:db8::8a2e:370:7334 at 10:43:12, v1.2.3"
    )
    assert out == (
        "peer [REDACTED:ipv4]:8080 via [REDACTED:ipv6] and [REDACTED:ipv6] at 10:43:12, v1.2.3"
    )


def test_unterminated_private_key_is_masked_to_the_end() -> None:
    out = Redactor().redact_text("key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0")
    assert out == "key: [REDACTED:private_key]"


@pytest.mark.parametrize(
    "line",
    [c[0] for c in CASES]
    + [
        "password=hunter22 and [REDACTED:email] already masked",
        f"Authorization: Bearer {JWT} token={JWT}",
        "card 4111 1111 1111 1111 2222 3333 and phone +1 (415) 555-2671.",
    ],
)
def test_redaction_is_idempotent(line: str) -> None:
    redactor = Redactor(secrets=["hunter22"], keep_ip_addresses=False)
    once = redactor.redact_text(line)
    assert redactor.redact_text(once) == once


def test_redact_value_walks_json_and_masks_secret_keys() -> None:
    data = {
        "password": "x",
        "apiKey": "abc",
        "db": {"PGPASSWORD": 1234, "host": "db.internal"},
        "Authorization": "Bearer abc",
        "events": [{"note": "mail bob@example.com"}, ("card 4111111111111111",)],
        "max_tokens": 512,
        "enabled": True,
        "empty_token": "",
    }
    redactor = Redactor()
    out = redactor.redact_value(data)
    assert out == {
        "password": "[REDACTED:secret_assignment]",
        "apiKey": "[REDACTED:secret_assignment]",
        "db": {"PGPASSWORD": "[REDACTED:secret_assignment]", "host": "db.internal"},
        "Authorization": "Bearer [REDACTED:bearer]",
        "events": [{"note": "mail [REDACTED:email]"}, ("card [REDACTED:card]",)],
        "max_tokens": 512,
        "enabled": True,
        "empty_token": "",
    }
    assert data["password"] == "x"  # a new object, the input is untouched
    assert redactor.redact_value(out) == out


SECRET = 'p@ss w/rd+"quoted"'


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        quote(SECRET, safe=""),
        quote(SECRET),
        json.dumps(SECRET)[1:-1],
    ],
)
def test_secret_values_and_encoded_forms_are_masked(form: str) -> None:
    redactor = Redactor(secrets=[SECRET, "abc"])
    out = redactor.redact_text(f"echo {form} done")
    assert out == "echo [REDACTED:secret_value] done"
    assert redactor.stats["secret_value"] == 1


def test_secret_base64_inside_longer_base64_is_masked() -> None:
    blob = base64.b64encode(b"user:" + b"correct-horse-battery").decode()
    out = Redactor(secrets=["correct-horse-battery"]).redact_text(f"cfg {blob}")
    assert "[REDACTED:" in out


def test_short_secrets_are_ignored() -> None:
    assert Redactor(secrets=["abc"]).redact_text("abc abcdef") == "abc abcdef"


def test_module_level_redact_text() -> None:
    assert redact_text("mail bob@example.com") == "mail [REDACTED:email]"
    assert redact_text("say opensesame", secrets=["opensesame"]) == "say [REDACTED:secret_value]"


def test_stats_accumulate_across_calls() -> None:
    redactor = Redactor()
    redactor.redact_text("a@example.com b@example.com")
    redactor.redact_text("c@example.com 123-45-6789")
    redactor.redact_value({"token": "t"})
    assert redactor.stats == {"email": 3, "ssn": 1, "secret_assignment": 1}


def test_stream_catches_a_key_split_across_chunks() -> None:
    stream = StreamRedactor(Redactor())
    lines = stream.feed("start\nusing AKIAIOSF")
    lines += stream.feed("ODNN7EXAMPLE for s3\nnext line without newline")
    assert lines == ["start", "using [REDACTED:aws_access_key_id] for s3"]
    assert stream.close() == ["next line without newline"]


def test_stream_masks_multiline_pem_block_as_one() -> None:
    redactor = Redactor()
    stream = StreamRedactor(redactor)
    out: list[str] = []
    text = f"before\nkey={PEM} after\nmail bob@example.com\n"
    for i in range(0, len(text), 7):  # arbitrary chunking, splitting lines and markers
        out += stream.feed(text[i : i + 7])
    out += stream.close()
    assert out == ["before", "key=[REDACTED:private_key] after", "mail [REDACTED:email]"]
    assert redactor.stats["private_key"] == 1


def test_stream_caps_an_endless_pem_block() -> None:
    stream = StreamRedactor(Redactor(), max_block_lines=5)
    body = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n" * 20
    out = stream.feed("-----BEGIN PRIVATE KEY-----\n" + body + "done\n")
    assert out == ["[REDACTED:private_key]", "done"]
    assert "QUJD" not in "".join(out + stream.close())


def test_stream_close_masks_an_unterminated_block() -> None:
    stream = StreamRedactor(Redactor())
    assert stream.feed("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n") == []
    assert stream.close() == ["[REDACTED:private_key]"]


def test_logging_filter_on_a_real_handler() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test_redaction.filter")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("login %s with password=%s", "bob@example.com", "hunter22")
        try:
            raise ValueError("token=abc123secret")
        except ValueError:
            logger.exception("failed for %s", "bob@example.com")
    finally:
        logger.removeHandler(handler)
    text = buffer.getvalue()
    assert "WARNING login [REDACTED:email] with password=[REDACTED:secret_assignment]" in text
    assert "ERROR failed for [REDACTED:email]" in text
    assert "ValueError: token=[REDACTED:secret_assignment]" in text
    for leaked in ("bob@example.com", "hunter22", "abc123secret"):
        assert leaked not in text
