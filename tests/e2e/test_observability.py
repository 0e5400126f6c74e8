"""Operators see everything: metrics move with a real run, and one grep follows it everywhere."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from shared.config import Settings
from tests.builders import run_request
from tests.fleet import Fleet

pytestmark = pytest.mark.xdist_group("fleet")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def endpoints(fleet: Fleet, settings: Settings) -> dict[str, str]:
    return {
        "api": f"{fleet.base}/metrics",
        "provisioner": f"http://127.0.0.1:{settings.provisioner_metrics_port}/metrics",
        "executor": f"http://127.0.0.1:{settings.executor_metrics_port}/metrics",
        "finalizer": f"http://127.0.0.1:{settings.finalizer_metrics_port}/metrics",
    }


def reachable(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.2)


def test_metrics_move_with_one_successful_run(fleet: Fleet, fleet_settings: Settings) -> None:
    urls = endpoints(fleet, fleet_settings)
    # The api answers first; a worker serves its endpoint once its pool is ready.
    for url in urls.values():
        eventually(lambda u=url: reachable(u), timeout=60)
    before = {name: scrape(url) for name, url in urls.items()}
    method = "test.run"

    # Long enough for the engine to deliver a stats sample (CPU, peak memory) even when loaded:
    # a 1 s run missed it once in CI, with two test workers and their fleets on two cores.
    run = fleet.run(run_request(methodId=method, input={"action": "sleep", "seconds": 3}))
    assert run["status"] == "succeeded", run

    # The terminal transition happens in the finalizer: its endpoint counts the run once.
    fin = scrape(urls["finalizer"])
    runs_labels = {"status": "succeeded", "method": method, "backend": "docker"}
    assert (
        value(fin, "sandbox_runs_total", **runs_labels)
        - value(before["finalizer"], "sandbox_runs_total", **runs_labels)
        == 1
    )
    for phase in ("queue_wait", "provision", "execute", "finalize"):
        seen = value(fin, "sandbox_run_phase_seconds_count", phase=phase) - value(
            before["finalizer"], "sandbox_run_phase_seconds_count", phase=phase
        )
        assert seen == 1, phase
    for name in ("sandbox_run_cpu_seconds_count", "sandbox_run_peak_memory_bytes_count"):
        assert value(fin, name) - value(before["finalizer"], name) == 1, name
    assert value(fin, "sandbox_run_oom_kills_total") == value(
        before["finalizer"], "sandbox_run_oom_kills_total"
    )

    # Each worker counted its task for this run (the task's postrun may trail the status).
    for service, task in (
        ("provisioner", "sandbox.provision"),
        ("executor", "sandbox.execute"),
        ("finalizer", "sandbox.finalize"),
    ):
        labels = {"task": task, "outcome": "succeeded"}
        start = value(before[service], "sandbox_celery_tasks_total", **labels)
        eventually(
            lambda s=service, lb=labels, st=start: (
                value(scrape(urls[s]), "sandbox_celery_tasks_total", **lb) >= st + 1
            )
        )

    # The api counted the submit, and the fleet's queues are empty again.
    api = scrape(urls["api"])
    post = {"route": "/api/sandbox/runs", "method": "POST", "status": "202"}
    assert (
        value(api, "sandbox_api_requests_total", **post)
        - value(before["api"], "sandbox_api_requests_total", **post)
        == 1
    )
    assert value(api, "sandbox_api_request_duration_seconds_count", method="POST") > value(
        before["api"], "sandbox_api_request_duration_seconds_count", method="POST"
    )
    for queue in ("provision", "execute", "finalize"):
        assert value(api, "sandbox_queue_depth", queue=queue) == 0, queue
        assert value(api, "sandbox_queue_oldest_message_age_seconds", queue=queue) == 0, queue
    assert value(api, "sandbox_fleet_collector_up") == 1
    for status in ("queued", "provisioning", "ready", "running", "finalizing"):
        assert ("sandbox_runs_in_status", frozenset({("status", status)})) in api


def test_one_grep_follows_a_run_across_all_four_services(fleet: Fleet) -> None:
    request_id = f"req-{uuid.uuid4()}"
    response = fleet.post(run_request(), headers={"X-Request-Id": request_id})
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    assert fleet.wait(run_id)["status"] == "succeeded"

    def records(service: str) -> list[dict[str, object]]:
        found = []
        for line in (fleet.logs / f"{service}.log").read_text(errors="replace").splitlines():
            if run_id not in line or not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("runId") == run_id:
                found.append(record)
        return found

    services = ("api", "provisioner", "executor", "finalizer")
    eventually(lambda: all(records(s) for s in services))
    for service in services:
        tagged = records(service)
        assert {r["service"] for r in tagged} == {service}
        # The api's request id travelled in the Celery message headers to every worker.
        assert any(r.get("requestId") == request_id for r in tagged), (service, tagged)
        if service != "api":
            assert any(r.get("task", "").startswith("sandbox.") for r in tagged), tagged
    executor = records("executor")
    assert any(r.get("attempt") == 1 for r in executor), executor
    print(f"run {run_id} request {request_id}: logs under {fleet.logs}")
