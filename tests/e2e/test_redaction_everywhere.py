"""No secret leaves the sandbox: a catalogue of secrets goes through the real fleet, then every
Postgres table, every blob, every service log line and every API response is searched for it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
import requests

from shared.config import Settings
from tests.builders import run_request
from tests.fleet import ROOT, Fleet

pytestmark = pytest.mark.xdist_group("fleet")


def adapter_module() -> ModuleType:
    sys.path.insert(0, str(ROOT / "shared"))  # the adapter imports its SDK as a top-level module
    try:
        spec = importlib.util.spec_from_file_location(
            "catalogue_adapter", ROOT / "infra" / "adapters" / "testkit" / "test_adapter.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "shared"))


def secret_parts(module: ModuleType) -> list[str]:
    """The parts of each catalogue line that must never be seen again."""
    parts = {
        "email": "maria.gonzalez@example.org",
        "phone": "7946 0958",
        "card": "5555 5555 5555 4444",
        "iban": "WEST 1234 5698",
        "ssn": "219-09-9999",
        "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "github_token": "ghp_1A2b3C4d5E6f7G8h9I0j1K2l3M4n5O6p7Q8r",
        "slack_token": "xoxb-123456789012",
        "stripe_key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "google_api_key": "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI",
        "jwt": "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "bearer": "0b79bab50daca910b000d4f1a2b675d604257e42",
        "url_password": "Tr0ub4dor&3",
        "secret_assignment": "correct-horse-battery-staple",
        "azure_storage_key": "c2VjcmV0a2V5c2VjcmV0a2V5",
    }
    assert {kind for kind, _ in module.CATALOGUE} == set(parts), "the catalogue changed"
    for kind, line in module.CATALOGUE:
        assert parts[kind] in line, kind
    return [
        *parts.values(),
        "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu",
        "ghp_ZYXWVUTSRQPONMLKJIHGFEDCBA0987654321",
        "ZYXWVUTSRQPONMLKJ",
        module.RUNTIME_MASK,
    ]


def test_no_secret_survives_anywhere(fleet: Fleet, fleet_settings: Settings) -> None:
    module = adapter_module()
    secrets = secret_parts(module)
    run_id = fleet.submit(run_request(input={"action": "catalogue"}))
    run = fleet.wait(run_id)
    assert run["status"] == "succeeded", run["statusReason"]

    seen: dict[str, str] = {}
    # Every API response a client can get about the run.
    seen["run"] = json.dumps(run)
    seen["logs page"] = fleet.get(
        f"/api/sandbox/runs/{run_id}/logs", headers={"Accept": "application/json"}
    ).text
    seen["ndjson"] = fleet.get(f"/api/sandbox/runs/{run_id}/logs").text
    seen["sse"] = fleet.get(
        f"/api/sandbox/runs/{run_id}/logs", headers={"Accept": "text/event-stream"}
    ).text
    seen["list"] = fleet.get("/api/sandbox/runs").text
    seen["deliveries"] = fleet.get(f"/api/sandbox/runs/{run_id}/deliveries").text
    for stream in ("stdout", "stderr"):
        link = fleet.get(
            f"/api/sandbox/runs/{run_id}/logs/{stream}/download", allow_redirects=False
        ).headers["Location"]
        seen[f"download {stream}"] = requests.get(f"{fleet.base}{link}", timeout=10).text
    # Every row of every table, events (outbox) included.
    with psycopg.connect(fleet_settings.database_url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        for table in tables:
            rows = conn.execute(f'SELECT t::text FROM "{table}" t').fetchall()
            seen[f"table {table}"] = "\n".join(r[0] for r in rows)
    # Every blob, and every line the services themselves logged.
    for path in Path(fleet_settings.blob_dir).rglob("*"):
        if path.is_file():
            seen[f"blob {path.name}"] = path.read_text(errors="replace")
    for path in fleet.logs.glob("*.log"):
        seen[f"service log {path.name}"] = path.read_text(errors="replace")

    assert run["redactions"]["secret_value"] >= 2, "the runtime mask was applied"
    assert "::add-mask::" not in seen["logs page"] + seen["download stdout"]
    assert "[REDACTED:private_key]" in seen["download stdout"]
    leaks = [
        (where, secret) for where, text in seen.items() for secret in secrets if secret in text
    ]
    assert leaks == []
