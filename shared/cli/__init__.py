"""``sandbox-runner``: the operator and developer command line.

Commands live in modules beside this one, grouped by who uses them; each registers itself on
``main`` when imported at the bottom of this file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import requests

from shared.auth import issue_token
from shared.config import load_settings
from shared.db.migrate import ensure_database, migrate
from shared.states import TERMINAL


@click.group()
def main() -> None:
    """Run and operate the Sandbox Runner fleet."""


@main.command()
@click.option("--ttl", type=int, default=None, help="Lifetime in seconds (default: the setting).")
@click.option("--subject", default="local-developer", show_default=True)
def token(ttl: int | None, subject: str) -> None:
    """Print a bearer token the local API accepts (local dev issuer)."""
    click.echo(issue_token(load_settings(), subject=subject, ttl_s=ttl))


@main.command("migrate")
def migrate_cmd() -> None:
    """Create the database if missing and apply pending migrations."""
    settings = load_settings()
    if ensure_database(settings.database_url):
        click.echo("created the database")
    applied = migrate(settings.database_url)
    click.echo(
        f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")
    )


@main.command()
@click.argument("request_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--api", default="http://127.0.0.1:8000", show_default=True)
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--timeout", type=float, default=360.0, show_default=True)
def submit(request_file: Path, api: str, wait: bool, timeout: float) -> None:
    """Submit the run described in REQUEST_FILE (JSON), wait for it and print the result.

    Exits 0 when the run succeeded, 1 when it ended otherwise, 2 when it could not be submitted.
    """
    headers = {"Authorization": f"Bearer {issue_token(load_settings())}"}
    body = json.loads(request_file.read_text())
    response = requests.post(f"{api}/api/sandbox/runs", json=body, headers=headers, timeout=30)
    if response.status_code != 202:
        click.echo(f"submit refused ({response.status_code}): {response.text}", err=True)
        sys.exit(2)
    run_id = response.json()["id"]
    click.echo(f"submitted run {run_id}", err=True)
    if not wait:
        click.echo(run_id)
        return
    run = _wait(api, run_id, headers, timeout)
    click.echo(json.dumps(run, indent=2))
    sys.exit(0 if run["status"] == "succeeded" else 1)


def _wait(api: str, run_id: str, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        run: dict[str, Any] = requests.get(
            f"{api}/api/sandbox/runs/{run_id}", headers=headers, timeout=30
        ).json()
        if run["status"] in TERMINAL or time.monotonic() > deadline:
            return run
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


if __name__ == "__main__":
    main()
