"""The ACI backend and the backend choice, with the real ARM client against the simulator."""

from __future__ import annotations

import base64
import json
import uuid
from types import SimpleNamespace

import pytest

from shared.backends import aci, choice
from shared.config import Settings, load_settings
from shared.errors import BackendUnavailable, ImageNotFound
from shared.policy import Resources
from shared.runtime import Runtime
from tests.sim.aci_sim import AciSimulator
from tests.sim.fixtures import aci_env, aci_sim, aci_sim_session, sim_tls  # noqa: F401
from tests.sim.tls import Tls

PERSONA = "6f1c2a57-3b0e-4c55-9a51-0f4d7f1d2b11"


@pytest.fixture
def aci_settings(
    settings_env: dict[str, str],
    aci_sim: AciSimulator,  # noqa: F811
    sim_tls: Tls,  # noqa: F811
) -> Settings:
    return load_settings({**settings_env, **aci_env(aci_sim, sim_tls)})


def _spec(**overrides: object) -> aci.GroupSpec:
    values: dict[str, object] = {
        "run_id": str(uuid.uuid4()),
        "attempt": 1,
        "method_id": "test.run",
        "image": "sandboxrunner.azurecr.io/test@sha256:" + "a" * 64,
        "input_json": json.dumps({"action": "echo", "stdout": ["hi"], "value": 1}).encode(),
        "resources": Resources(cpu=0.5, memory_mb=1536, timeout_s=30),
        "secure_env": {"API_TOKEN": "s3cr3t-value"},
    }
    values.update(overrides)
    return aci.GroupSpec(**values)  # type: ignore[arg-type]


def test_group_shape_and_lifecycle(aci_settings: Settings, aci_sim: AciSimulator) -> None:  # noqa: F811
    client, cfg = aci.connect(aci_settings), aci.AciConfig.from_settings(aci_settings)
    assert cfg is not None
    spec = _spec()
    aci.create(client, cfg, spec)
    name = aci.group_name(spec.run_id, 1)
    sent = aci_sim.created[0]["properties"]
    container = sent["containers"][0]["properties"]
    assert container["resources"]["requests"] == {"cpu": 0.5, "memoryInGB": 1.5}
    assert container["resources"]["limits"] == {"cpu": 0.5, "memoryInGB": 1.5}
    secret = sent["volumes"][0]["secret"]["input.json"]
    assert json.loads(base64.b64decode(secret)) == json.loads(spec.input_json)
    assert {"name": "API_TOKEN", "secureValue": "s3cr3t-value"} in container["environmentVariables"]
    # What ARM gives back never shows the secure value or the secret volume.
    state = aci.get(client, cfg, name)
    assert state is not None and state.failure() is None
    _, _, listed = aci.list_fleet_groups(client, cfg)[0]
    assert listed == name
    aci.delete(client, cfg, name)
    assert aci.get(client, cfg, name) is None
    aci.delete(client, cfg, name)  # gone already is fine


def test_throttling_past_the_sdk_retries_is_capacity(
    aci_settings: Settings,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    client, cfg = aci.connect(aci_settings), aci.AciConfig.from_settings(aci_settings)
    assert cfg is not None
    aci_sim.throttle = 5
    with pytest.raises(aci.AciCapacity, match="429"):
        aci.create(client, cfg, _spec())
    aci_sim.throttle = 1  # one 429 is absorbed by the SDK's own retry (Retry-After honoured)
    aci.create(client, cfg, _spec())


def test_pull_error_and_provisioning_failure_are_reported(
    aci_settings: Settings,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    client, cfg = aci.connect(aci_settings), aci.AciConfig.from_settings(aci_settings)
    assert cfg is not None
    aci_sim.pull_error_images = {"*"}
    spec = _spec()
    aci.create(client, cfg, spec)
    state = aci.get(client, cfg, aci.group_name(spec.run_id, 1))
    assert state is not None
    assert isinstance(state.failure(), ImageNotFound)
    aci_sim.pull_error_images = set()
    aci_sim.fail_provisioning = True
    spec = _spec()
    aci.create(client, cfg, spec)
    state = aci.get(client, cfg, aci.group_name(spec.run_id, 1))
    assert state is not None
    failure = state.failure()
    assert failure is not None and "provisioning failed" in str(failure)
    aci_sim.unavailable = True
    with pytest.raises(BackendUnavailable):
        aci.get(client, cfg, "anything")


def test_rules_pick_the_most_specific_backend() -> None:
    rules = choice.parse_rules(f"seo.*=aci, {PERSONA}/seo.evaluate_content=docker,test.*=auto")
    assert choice.wanted("docker", rules, PERSONA, "seo.evaluate_content") == "docker"
    assert choice.wanted("docker", rules, str(uuid.uuid4()), "seo.evaluate_content") == "aci"
    assert choice.wanted("docker", rules, PERSONA, "test.run") == "auto"
    assert choice.wanted("aci", rules, PERSONA, "other.method") == "aci"
    with pytest.raises(ValueError):
        choice.parse_rules("seo.*=kubernetes")


def test_auto_falls_back_on_503_and_on_quota_and_records_why(
    aci_settings: Settings,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    import dataclasses

    rt = Runtime(dataclasses.replace(aci_settings, backend="auto"))
    run = SimpleNamespace(id=uuid.uuid4(), persona_id=uuid.UUID(PERSONA), method_id="test.run")
    plan = {"resources": {"cpu": 1.0}, "backend": "docker"}
    assert choice.decide(rt, run, plan)["backend"] == "aci"  # type: ignore[arg-type]
    aci_sim.unavailable = True
    decided = choice.decide(rt, run, plan)  # type: ignore[arg-type]
    assert decided["backend"] == "docker"
    assert "503" in decided["plan"]["backendChoice"]["fallbackReason"]
    aci_sim.unavailable = False
    aci_sim.quota_limit = 0
    decided = choice.decide(rt, run, plan)  # type: ignore[arg-type]
    assert decided["plan"]["backendChoice"] == {
        "asked": "auto",
        "chosen": "docker",
        "fallbackReason": "ACI quota reached: ContainerGroups 0/0",
    }
    unconfigured = Runtime(
        dataclasses.replace(aci_settings, backend="auto", aci_subscription_id=None)
    )
    assert choice.decide(unconfigured, run, plan)["backend"] == "docker"  # type: ignore[arg-type]
