"""infra/github: the composite action and the example workflow pass actionlint and GitHub's schemas.

Both tools run offline: actionlint is a static binary in the venv, check-jsonschema uses the
schemas it vendors (``--builtin-schema vendor.*``); neither downloads anything here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ACTION = ROOT / "infra" / "github" / "action.yml"
WORKFLOW = ROOT / "infra" / "github" / "example-workflow.yml"


def _actionlint(project: Path, workflow_text: str) -> subprocess.CompletedProcess[str]:
    """Lint ``workflow_text`` as a workflow of a project that contains our action.

    actionlint checks a local action (``uses: ./infra/github``: its inputs, required ones) only
    for workflows inside a project, so the test lays one out: .git, .github/workflows, the action.
    """
    (project / ".git").mkdir(exist_ok=True)
    workflows = project / ".github" / "workflows"
    workflows.mkdir(parents=True, exist_ok=True)
    (project / "infra" / "github").mkdir(parents=True, exist_ok=True)
    shutil.copy(ACTION, project / "infra" / "github" / "action.yml")
    (workflows / "evaluate.yml").write_text(workflow_text)
    return subprocess.run(
        [
            str(BIN / "actionlint"),
            "-no-color",
            "-oneline",
            "-shellcheck=",
            "-pyflakes=",
            ".github/workflows/evaluate.yml",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_workflow_passes_actionlint(tmp_path: Path) -> None:
    done = _actionlint(tmp_path, WORKFLOW.read_text())
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_really_checks_the_action_inputs(tmp_path: Path) -> None:
    broken = WORKFLOW.read_text().replace(
        '          timeout: "600"\n', '          timeout: "600"\n          no-such-input: x\n'
    )
    done = _actionlint(tmp_path, broken)
    assert done.returncode == 1
    assert 'input "no-such-input" is not defined' in done.stdout


@pytest.mark.parametrize(
    ("schema", "path"),
    [("vendor.github-workflows", WORKFLOW), ("vendor.github-actions", ACTION)],
)
def test_github_json_schemas(schema: str, path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_action_wraps_the_cli_and_exposes_its_outputs() -> None:
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    assert set(action["outputs"]) == {"run-id", "status", "evaluation-path"}
    for name, output in action["outputs"].items():
        assert output["value"] == f"${{{{ steps.submit.outputs.{name} }}}}"
    scripts = "\n".join(step.get("run", "") for step in action["runs"]["steps"])
    assert "sandbox-runner submit" in scripts
    # Inputs reach scripts through env, never pasted into the script (injection).
    assert "${{ inputs." not in scripts
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"]["id-token"] == "write"
    steps = workflow["jobs"]["evaluate"]["steps"]
    assert any(step.get("uses") == "./infra/github" for step in steps)
