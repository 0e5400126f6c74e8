"""``sandbox-runner redact``: the same redactor as ``sandbox-redact``, as a subcommand."""

from __future__ import annotations

from shared.cli import main
from shared.redaction.cli import main as redact_main

main.add_command(redact_main, name="redact")
