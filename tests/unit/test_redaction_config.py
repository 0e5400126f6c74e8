"""Redaction config from TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.redaction import RedactionConfig, Redactor, load_redaction_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "redaction.toml"
    path.write_text(text)
    return path


def test_config_adds_patterns_allow_list_and_ip_setting(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'keep_ip_addresses = false\nallow = ["bob@example.com"]\n'
        '[[patterns]]\nkind = "employee_id"\nregex = "EMP-[0-9]{6}"\n'
        '[[patterns]]\nkind = "ticket"\nregex = "ticket #(?P<secret>[0-9]+)"\n',
    )
    config = load_redaction_config(path)
    redactor = Redactor.from_config(config, secrets=["opensesame"])
    out = redactor.redact_text(
        "EMP-123456 ticket #42 bob@example.com eve@example.com 10.0.0.1 opensesame"
    )
    assert out == (
        "[REDACTED:employee_id] ticket #[REDACTED:ticket] bob@example.com [REDACTED:email] "
        "[REDACTED:ipv4] [REDACTED:secret_value]"
    )


def test_no_path_gives_defaults() -> None:
    assert load_redaction_config(None) == RedactionConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[patterns]]\nkind = "bad"\nregex = "a(b"\n', "'bad' has an invalid regex"),
        ('[[patterns]]\nkind = "empty"\nregex = "x*"\n', "'empty' matches the empty string"),
        ('[[patterns]]\nkind = "Bad Kind"\nregex = "x"\n', "must match"),
        ("allow = 3\n", "allow must be a list"),
        ("keep_ips = true\n", "unknown keys"),
        ("keep_ip_addresses = [\n", "not valid TOML"),
    ],
)
def test_invalid_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_redaction_config(write(tmp_path, text))
