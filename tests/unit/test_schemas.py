from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError

from services.api.schemas import RunRequestSchema
from tests.builders import run_request


def load(body: dict[str, Any]) -> dict[str, Any]:
    return RunRequestSchema().load(body)  # type: ignore[no-any-return]


def errors_of(body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        load(body)
    return info.value.messages  # type: ignore[return-value]


def test_the_seed_payload_loads() -> None:
    data = load(run_request())
    assert data["methodId"] == "test.run"
    assert data["dryRun"] is False


@pytest.mark.parametrize(
    "image",
    [
        "localhost:5000/seo-adapter:dev",
        "pf.azurecr.io/seo-adapter:sha",
        "busybox",
        "registry.example.com/team/adapter@sha256:" + "a" * 64,
        "seo-adapter:1.2.3",
    ],
)
def test_valid_image_references(image: str) -> None:
    assert load(run_request(adapterImage=image))["adapterImage"] == image


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("personaId", "not-a-uuid"),
        ("methodId", "evaluate"),
        ("methodId", "Seo.Evaluate"),
        ("adapterImage", "UPPER/case:tag"),
        ("adapterImage", "image:tag with space"),
        ("adapterImage", "image@sha256:short"),
        ("input", ["not", "an", "object"]),
        ("input", "text"),
        ("dryRun", "perhaps"),
    ],
)
def test_bad_fields_are_named(field: str, value: Any) -> None:
    assert field in errors_of(run_request(**{field: value}))


def test_unknown_and_missing_fields_are_named() -> None:
    errors = errors_of({**run_request(), "extra": 1})
    assert "extra" in errors
    body = run_request()
    del body["adapterImage"]
    assert "adapterImage" in errors_of(body)


def test_requested_resources_beyond_guardrails_name_the_limit() -> None:
    errors = errors_of(run_request(resources={"memoryMb": 8192}))
    assert "memoryMb" in errors["resources"]
    assert load(run_request(resources={"cpu": 2, "timeoutS": 10}))["resources"]["cpu"] == 2
