"""The OpenAPI document declares the answers the api's hooks give, not only the views' own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.api.app import create_app
from shared.config import load_settings

ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}
WEBHOOK = "/api/sandbox/webhooks/github"


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = load_settings(
        {
            "SANDBOX_STATE_DIR": str(tmp_path_factory.mktemp("state")),
            "SANDBOX_RATE_LIMIT_PER_MINUTE": "0",  # no Redis: this test does no I/O
        }
    )
    app = create_app(settings)
    document: dict[str, Any] = app.test_client().get("/api/openapi.json").get_json()
    return document


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if isinstance(op, dict) and "responses" in op
    ]


def _resolved(doc: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[1]
        found: dict[str, Any] = doc["components"]["responses"][name]
        return found
    return response


def test_token_operations_declare_401_403_and_every_operation_429_503(
    doc: dict[str, Any],
) -> None:
    operations = _operations(doc)
    assert len(operations) >= 20
    for path, method, op in operations:
        codes = set(op["responses"])
        assert {"429", "503"} <= codes, (method, path)
        if path != WEBHOOK:
            assert {"401", "403"} <= codes, (method, path)
    assert "401" in doc["paths"][WEBHOOK]["post"]["responses"]  # its signature check


def test_body_operations_declare_400_413_415_422(doc: dict[str, Any]) -> None:
    for path, method, op in _operations(doc):
        codes = set(op["responses"])
        if method in ("post", "put", "patch") and path != WEBHOOK:
            assert "415" in codes, (method, path)
        if "requestBody" in op:
            assert {"400", "413", "422"} <= codes, (method, path)
        if "{" in path or op.get("parameters"):
            assert "422" in codes, (method, path)


def test_every_error_answer_has_the_json_error_schema(doc: dict[str, Any]) -> None:
    for path, method, op in _operations(doc):
        for code, response in op["responses"].items():
            if code[0] not in "45":
                continue
            content = _resolved(doc, response).get("content", {})
            assert content["application/json"]["schema"] == ERROR_SCHEMA, (method, path, code)
    limited = _resolved(doc, doc["paths"]["/api/sandbox/runs"]["get"]["responses"]["429"])
    assert "Retry-After" in limited["headers"]


def test_the_document_has_no_duplicate_keys(tmp_path: Path) -> None:
    # The views document some codes as integers; added as strings they would be written twice.
    settings = load_settings(
        {"SANDBOX_STATE_DIR": str(tmp_path), "SANDBOX_RATE_LIMIT_PER_MINUTE": "0"}
    )
    raw = create_app(settings).test_client().get("/api/openapi.json").get_data(as_text=True)

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), keys
        return dict(pairs)

    json.loads(raw, object_pairs_hook=unique)
