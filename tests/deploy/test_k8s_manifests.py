"""infra/k8s: every manifest validates offline, and the fleet's invariants hold in them.

Built-in kinds are validated strictly (unknown fields refused) by kubernetes-validate against the
JSON schemas it bundles. KEDA's kinds are custom resources it has no schema for: they are checked
against the hand-written subset in ``keda_schema.py`` (the fields these manifests use, with
unknown fields refused), not against KEDA's full CRD.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared.queues import SERVICE_QUEUES
from tests.deploy.keda_schema import KEDA_SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
# The oldest AKS minor version still in support when this was written.
K8S_VERSION = "1.32.0"
LONGEST_RUN_S = 300
WORKERS = ("provisioner", "executor", "finalizer")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


DOCS = _documents()


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCS if doc["kind"] == kind}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[name for name, _ in DOCS])
def test_manifest_is_valid(name: str, doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_really_refuses_bad_manifests() -> None:
    deployment = dict(_by_kind("Deployment")["sandbox-api"])
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    scaled = _by_kind("ScaledObject")["sandbox-executor"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**scaled, "spec": {**scaled["spec"], "minReplicas": 1}}, KEDA_SCHEMAS["ScaledObject"]
        )


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_every_deployment_has_probes_resources_and_hardening() -> None:
    deployments = _by_kind("Deployment")
    assert set(deployments) == {f"sandbox-{name}" for name in ("api", "flower", "beat", *WORKERS)}
    accounts = _by_kind("ServiceAccount")
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        assert {"livenessProbe", "readinessProbe"} <= set(container), name
        assert {"requests", "limits"} <= set(container["resources"]), name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert pod["serviceAccountName"] in accounts, name


def test_worker_queues_match_the_routing_contract() -> None:
    deployments = _by_kind("Deployment")
    for service, queues in SERVICE_QUEUES.items():
        command = _container(deployments[f"sandbox-{service}"])["command"]
        assert command[command.index("-Q") + 1].split(",") == queues, service


def test_keda_scales_each_worker_on_its_own_queue() -> None:
    scaled = _by_kind("ScaledObject")
    assert set(scaled) == {f"sandbox-{service}" for service in WORKERS}
    for name, obj in scaled.items():
        service = name.removeprefix("sandbox-")
        assert obj["spec"]["scaleTargetRef"]["name"] == name
        assert obj["spec"]["minReplicaCount"] >= 1, "workers never scale to zero"
        for trigger in obj["spec"]["triggers"]:
            assert trigger["type"] == "redis"
            assert trigger["metadata"]["listName"] in SERVICE_QUEUES[service]


def test_executor_outlives_the_longest_run_on_scale_in() -> None:
    executor = _by_kind("Deployment")["sandbox-executor"]
    grace = executor["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= LONGEST_RUN_S + 30


def test_beat_is_a_singleton() -> None:
    beat = _by_kind("Deployment")["sandbox-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    assert "sandbox-beat" not in _by_kind("ScaledObject")


def test_secrets_are_referenced_not_inlined() -> None:
    assert not _by_kind("Secret")
    for name, deployment in _by_kind("Deployment").items():
        env = {item["name"]: item for item in _container(deployment).get("env", [])}
        for variable in ("SANDBOX_DATABASE_URL", "SANDBOX_BROKER_URL"):
            assert "secretKeyRef" in env[variable]["valueFrom"], (name, variable)
    assert not any(
        key.endswith("_URL") for key in _by_kind("ConfigMap")["sandbox-runner-settings"]["data"]
    )


def test_service_accounts_use_workload_identity() -> None:
    for name, account in _by_kind("ServiceAccount").items():
        if name == "sandbox-operator":
            continue
        assert "azure.workload.identity/client-id" in account["metadata"]["annotations"], name
