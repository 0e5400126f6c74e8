"""sandbox-redact as a process: stdin to stdout, stats on stderr."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

# `make venv` installs the project, and with it the command, into the virtualenv.
SCRIPT = shutil.which("sandbox-redact", path=str(Path(sys.executable).parent))


def run(data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert SCRIPT is not None, "sandbox-redact is not installed in the virtualenv"
    return subprocess.run([SCRIPT, *args], input=data, capture_output=True, timeout=60)


def test_cli_redacts_stdin_and_prints_stats() -> None:
    data = (
        b"mail bob@example.com\nbad \xff byte token=abc123\n::add-mask::opensesame\nsay opensesame"
    )
    result = run(data, "--stats", "--secret", "hunter22", "--mask-ips")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == (
        "mail [REDACTED:email]\nbad \ufffd byte token=[REDACTED:secret_assignment]\n"
        "say [REDACTED:secret_value]\n"
    )
    assert json.loads(result.stderr) == {"email": 1, "secret_assignment": 1, "secret_value": 1}


def test_cli_secret_config_and_ip_options(tmp_path: Path) -> None:
    config = tmp_path / "r.toml"
    config.write_text(
        'allow = ["bob@example.com"]\n[[patterns]]\nkind = "emp"\nregex = "EMP-[0-9]+"\n'
    )
    data = b"hunter22 EMP-42 bob@example.com 10.0.0.1\n"
    plain = run(data, "--secret", "hunter22", "--config", str(config))
    assert plain.stdout == b"[REDACTED:secret_value] [REDACTED:emp] bob@example.com 10.0.0.1\n"
    masked = run(data, "--mask-ips")
    assert masked.stdout == b"hunter22 EMP-42 [REDACTED:email] [REDACTED:ipv4]\n"


def test_cli_rejects_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "r.toml"
    config.write_text('[[patterns]]\nkind = "broken"\nregex = "("\n')
    result = run(b"x\n", "--config", str(config))
    assert result.returncode == 2
    assert b"broken" in result.stderr
