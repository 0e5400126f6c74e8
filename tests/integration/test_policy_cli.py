"""``sandbox-runner policy`` and ``token --role`` against the test database (issue 6)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jwt
import psycopg
import pytest
from click.testing import CliRunner
from psycopg_pool import ConnectionPool

from shared.cli import main
from shared.config import Settings
from tests.builders import PERSONA


@pytest.fixture
def env(
    settings_env: dict[str, str], pool: ConnectionPool, database_url: str
) -> Iterator[dict[str, str]]:
    yield settings_env
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE resource_policy")


def test_policy_set_list_delete(env: dict[str, str]) -> None:
    runner = CliRunner(env=env)
    args = ["policy", "set", "--persona", PERSONA, "--method", "seo.*", "--memory-mb", "1024"]
    assert runner.invoke(main, args).output.strip() == "created"
    assert runner.invoke(main, ["policy", "set", "--timeout-s", "90"]).output.strip() == "created"
    listed = runner.invoke(main, ["policy", "list", "--json"]).output.splitlines()
    assert [json.loads(line)["limits"] for line in listed] == [
        {"timeout_s": 90},
        {"memory_mb": 1024},
    ]
    refused = runner.invoke(main, ["policy", "set", "--method", "seo.*", "--cpu", "4"])
    assert refused.exit_code != 0 and "cpu 4.0 exceeds the guardrail 2.0" in refused.output
    assert runner.invoke(main, ["policy", "delete"]).output.strip() == "deleted"
    assert runner.invoke(main, ["policy", "delete"]).exit_code != 0


def test_token_role_option(env: dict[str, str], settings: Settings) -> None:
    out = CliRunner(env=env).invoke(main, ["token", "--role", "Runs.Read"]).output.strip()
    assert jwt.decode(out, options={"verify_signature": False})["roles"] == ["Runs.Read"]
