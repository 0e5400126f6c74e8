"""``sandbox-runner submit --wait`` run as a GitHub Actions step would run it, against the fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders import PERSONA, TEST_IMAGE
from tests.fleet import Fleet

pytestmark = pytest.mark.xdist_group("fleet")

CLI = str(Path(sys.executable).parent / "sandbox-runner")


def step(fleet: Fleet, tmp_path: Path, data: dict[str, object], *extra: str):  # type: ignore[no-untyped-def]
    """Run the CLI with GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and RUNNER_TEMP set, as a step."""
    input_file = tmp_path / "input.json"
    input_file.write_text(json.dumps(data))
    env = {
        **os.environ,
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "RUNNER_TEMP": str(tmp_path),
        "SANDBOX_TOKEN": fleet.token,
        "SANDBOX_API_URL": fleet.base,
    }
    args = ["--persona", PERSONA, "--method", "test.run", "--image", TEST_IMAGE, *extra]
    return subprocess.run(
        [CLI, "submit", "--wait", "--timeout", "120", *args, "--input-file", str(input_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def outputs(tmp_path: Path) -> dict[str, str]:
    lines = (tmp_path / "output").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_a_succeeded_run_writes_outputs_summary_and_evaluation(
    fleet: Fleet, tmp_path: Path
) -> None:
    done = step(fleet, tmp_path, {"action": "echo", "stdout": ["hello from the step"], "value": 5})
    assert done.returncode == 0, done.stderr
    assert "[stdout] hello from the step" in done.stderr  # logs followed while waiting
    out = outputs(tmp_path)
    assert set(out) == {"run-id", "status", "evaluation-path"}
    assert out["status"] == "succeeded"
    run = fleet.get(f"/api/sandbox/runs/{out['run-id']}").json()
    assert run["status"] == "succeeded"
    assert Path(out["evaluation-path"]).parent == tmp_path  # under RUNNER_TEMP
    assert json.loads(Path(out["evaluation-path"]).read_text()) == run["evaluation"]
    summary = (tmp_path / "summary.md").read_text()
    assert "succeeded" in summary and out["run-id"] in summary and "test.run" in summary
    assert json.loads(done.stdout)["id"] == out["run-id"]


def test_exit_codes_tell_failed_and_refused_apart(fleet: Fleet, tmp_path: Path) -> None:
    failed = step(fleet, tmp_path, {"action": "exit", "code": 7, "message": "giving up"})
    assert failed.returncode == 1, failed.stderr
    assert outputs(tmp_path)["status"] == "failed"
    assert "failed" in (tmp_path / "summary.md").read_text()
    (tmp_path / "refused").mkdir()
    refused = step(fleet, tmp_path / "refused", {"action": "echo"}, "--image", "Not An Image")
    assert refused.returncode == 2
    assert "submit refused (422)" in refused.stderr
    assert not (tmp_path / "refused" / "output").exists()
