"""Plain builders for test data."""

from __future__ import annotations

import uuid
from typing import Any

from shared.db import runs as runs_db

SEO_IMAGE = "localhost:5000/seo-adapter:dev"
TEST_IMAGE = "localhost:5000/test-adapter:dev"
PERSONA = "6f1c2a57-3b0e-4c55-9a51-0f4d7f1d2b11"


def run_request(**overrides: Any) -> dict[str, Any]:
    """Return a valid submit body for the test adapter (echo), with overrides."""
    body: dict[str, Any] = {
        "personaId": PERSONA,
        "methodId": "test.run",
        "adapterImage": TEST_IMAGE,
        "input": {"action": "echo", "stdout": ["hello"], "value": 1},
        "dryRun": False,
    }
    body.update(overrides)
    return body


def seo_input(**overrides: Any) -> dict[str, Any]:
    """Return a realistic SEO input."""
    content = (
        "<h1>Brewing better coffee at home</h1>"
        "<p>Good coffee starts with fresh beans and a steady routine. "
        "Grind the beans just before you brew.</p>"
        "<h2>Water</h2><p>Use clean water just off the boil.</p>"
    )
    data: dict[str, Any] = {
        "title": "Brewing Better Coffee at Home: A Simple Practical Guide",
        "metaDescription": (
            "Learn to brew better coffee at home with fresh beans, the right grind and clean "
            "water, using the brewer you already own today."
        ),
        "content": content,
        "keywords": ["coffee"],
    }
    data.update(overrides)
    return data


def new_id() -> str:
    return str(uuid.uuid4())


def stored_run(conn: Any, **overrides: Any) -> runs_db.Run:
    """Insert a queued run as the api would (``runs_db.create_run``), with overrides."""
    fields: dict[str, Any] = {
        "persona_id": uuid.uuid4(),
        "method_id": "test.run",
        "adapter_image": "img",
        "input": {},
        "dry_run": False,
    }
    fields.update(overrides)
    return runs_db.create_run(conn, **fields)
