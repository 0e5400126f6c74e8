"""``sandbox-runner``: the operator and developer command line.

Commands live in modules beside this one, grouped by who uses them; each registers itself on
``main`` when imported at the bottom of this file.
"""

from __future__ import annotations

import click

from shared.auth import ALL_ROLES, issue_token
from shared.config import load_settings
from shared.db.migrate import ensure_database, migrate


@click.group()
def main() -> None:
    """Run and operate the Sandbox Runner fleet."""


@main.command()
@click.option("--ttl", type=int, default=None, help="Lifetime in seconds (default: the setting).")
@click.option("--subject", default="local-developer", show_default=True)
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(ALL_ROLES),
    help="App role to grant (repeat); default: all of them.",
)
def token(ttl: int | None, subject: str, roles: tuple[str, ...]) -> None:
    """Print a bearer token the local API accepts (local dev issuer)."""
    click.echo(issue_token(load_settings(), subject=subject, roles=roles or ALL_ROLES, ttl_s=ttl))


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


# Operator commands; submit, follow and wait (CI-friendly). Each registers on ``main``.
# Resource policy rows (issue 6).
from shared.cli import ops, policy, submit  # noqa: E402,F401

if __name__ == "__main__":
    main()
