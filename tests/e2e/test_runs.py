"""A user's view of the fleet: submit over HTTP, wait, read the result and the logs."""

from __future__ import annotations

import pytest

from tests.builders import SEO_IMAGE, run_request, seo_input
from tests.fleet import Fleet

pytestmark = pytest.mark.xdist_group("fleet")


def test_an_seo_evaluation_succeeds_with_a_redacted_result(fleet: Fleet) -> None:
    run = fleet.run(
        run_request(methodId="seo.evaluate_content", adapterImage=SEO_IMAGE, input=seo_input())
    )
    assert run["status"] == "succeeded", run
    assert run["exitCode"] == 0 and run["statusReason"] is None
    evaluation = run["evaluation"]
    assert {c["id"] for c in evaluation["checks"]} >= {"title_length", "word_count", "readability"}
    assert 0 <= evaluation["score"] <= 100
    assert run["backend"] == "docker" and run["imageDigest"].startswith("sha256:")
    assert run["resources"] == {"cpu": 1.0, "memoryMb": 2048, "timeoutS": 60, "logCapMb": 100}
    stamps = run["timestamps"]
    assert (
        stamps["queued"]
        <= stamps["provisioned"]
        <= stamps["started"]
        <= stamps["finished"]
        <= stamps["finalized"]
    )
    assert run["logsPreview"]["head"], "the preview shows the adapter's first lines"


def test_stdout_and_stderr_come_back_apart_in_order(fleet: Fleet) -> None:
    run_id = fleet.submit(
        run_request(
            input={"action": "echo", "stdout": ["a", "b", "c"], "stderr": ["warn-1"], "value": 3}
        )
    )
    run = fleet.wait(run_id)
    assert run["status"] == "succeeded" and run["evaluation"] == {"echo": 3}
    lines = fleet.log_lines(run_id)
    assert [x["line"] for x in lines if x["stream"] == "stdout" and len(x["line"]) == 1] == [
        "a",
        "b",
        "c",
    ]
    assert "warn-1" in [x["line"] for x in lines if x["stream"] == "stderr"]
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
    assert not any("::sandbox-evaluation::" in x["line"] for x in lines)
    stderr_only = fleet.get(
        f"/api/sandbox/runs/{run_id}/logs",
        params={"stream": "stderr"},
        headers={"Accept": "application/json"},
    ).json()
    assert {x["stream"] for x in stderr_only["lines"]} == {"stderr"}


def test_a_non_zero_exit_fails_with_the_code(fleet: Fleet) -> None:
    run = fleet.run(run_request(input={"action": "exit", "code": 7, "message": "giving up"}))
    assert run["status"] == "failed"
    assert run["exitCode"] == 7
    assert run["statusReason"].startswith("exit_code: the adapter exited 7")


def test_a_run_past_its_wall_limit_is_timed_out(fleet: Fleet) -> None:
    run = fleet.run(
        run_request(input={"action": "sleep", "seconds": 60}, resources={"timeoutS": 2})
    )
    assert run["status"] == "timed_out"
    assert run["statusReason"] == "timeout: killed at the wall limit of 2 s"
    assert run["resources"]["timeoutS"] == 2


def test_memory_past_the_limit_fails_with_oom(fleet: Fleet) -> None:
    run = fleet.run(
        run_request(input={"action": "oom", "megabytes": 1024}, resources={"memoryMb": 64})
    )
    assert run["status"] == "failed"
    assert run["oomKilled"] is True
    assert run["statusReason"].startswith("oom:")


def test_a_missing_image_ends_error_with_what_to_do(fleet: Fleet) -> None:
    run = fleet.run(run_request(adapterImage="localhost:5000/not-built:dev"))
    assert run["status"] == "error"
    assert run["statusReason"].startswith("image_not_found:")
    assert "make images" in run["statusReason"]


def test_a_dry_run_plans_without_starting_a_container(fleet: Fleet) -> None:
    run = fleet.run(run_request(dryRun=True, resources={"cpu": 2}))
    assert run["status"] == "succeeded"
    assert run["statusReason"].startswith("dry_run")
    assert run["plan"]["resources"] == {
        "cpu": 2.0,
        "memoryMb": 256,
        "timeoutS": 20,
        "logCapMb": 100,
    }
    assert run["plan"]["imageDigest"] == run["imageDigest"]
    assert run["timestamps"]["started"] is None and run["attempt"] == 0
    assert fleet.log_lines(run["id"]) == []


def test_pii_and_secrets_never_come_back(fleet: Fleet) -> None:
    run_id = fleet.submit(run_request(input={"action": "pii"}))
    run = fleet.wait(run_id)
    everything = str(run) + str(fleet.log_lines(run_id))
    for secret in (
        "4111 1111 1111 1111",
        "4111111111111111",
        "AKIAIOSFODNN7EXAMPLE",
        "hunter2",
        "jane.doe@example.com",
    ):
        assert secret not in everything
    assert "[REDACTED:" in everything


def test_an_invalid_evaluation_fails_and_says_so(fleet: Fleet) -> None:
    run = fleet.run(run_request(input={"action": "bad_evaluation"}))
    assert run["status"] == "failed"
    assert run["statusReason"].startswith("evaluation_invalid: not valid JSON")
    missing = fleet.run(run_request(input={"action": "no_evaluation"}))
    assert missing["statusReason"].startswith("evaluation_missing")
