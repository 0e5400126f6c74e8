"""``sandbox-redact``: redact stdin to stdout with the same code the fleet uses."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import BinaryIO

import click

from .config import load_redaction_config
from .core import Redactor
from .stream import StreamRedactor

_CHUNK = 256 * 1024


def redact_stream(source: BinaryIO, sink: BinaryIO, redactor: Redactor) -> None:
    """Copy ``source`` to ``sink`` redacted, reading fixed-size chunks (never all at once)."""
    stream = StreamRedactor(redactor)
    read = getattr(source, "read1", source.read)  # read1: return what a pipe has, don't wait
    while chunk := read(_CHUNK):
        text = stream.feed_text(chunk)
        if text:
            sink.write(text.encode())
    text = stream.close_text()
    if text:
        sink.write(text.encode())
    sink.flush()


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file with extra patterns, allowed values and keep_ip_addresses.",
)
@click.option("--secret", "secrets", multiple=True, help="An exact value to mask (repeatable).")
@click.option("--mask-ips", is_flag=True, help="Mask IPv4/IPv6 addresses (kept by default).")
@click.option("--stats", "show_stats", is_flag=True, help="Print counts by kind to stderr (JSON).")
def main(
    config_path: Path | None, secrets: tuple[str, ...], mask_ips: bool, show_stats: bool
) -> None:
    """Mask PII and secrets in stdin and write the result to stdout."""
    try:
        config = load_redaction_config(config_path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    keep_ips = False if mask_ips else None
    redactor = Redactor.from_config(config, secrets=secrets, keep_ip_addresses=keep_ips)
    try:
        redact_stream(sys.stdin.buffer, sys.stdout.buffer, redactor)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); nothing left to say
        return
    if show_stats:
        click.echo(json.dumps(dict(sorted(redactor.stats.items()))), err=True)
