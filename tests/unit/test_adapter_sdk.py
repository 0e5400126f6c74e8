"""Runs a tiny adapter built on shared/adapter_sdk.py in a subprocess, as a container would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared.adapter_sdk import DEFAULT_INPUT_PATH, EVALUATION_MARKER

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"

ADAPTER = textwrap.dedent(
    """
    from adapter_sdk import AdapterFailure, BadInput, emit_evaluation, main, method

    @method("demo.ok")
    def ok(data):
        print("log line on stdout")
        return {"doubled": data["n"] * 2}

    @method("demo.twice")
    def twice(data):
        emit_evaluation({"draft": True})
        return {"final": True}

    @method("demo.fail")
    def fail(data):
        raise AdapterFailure("threshold not met", evaluation={"passed": False})

    @method("demo.bad")
    def bad(data):
        raise BadInput("n must be positive")

    @method("demo.crash")
    def crash(data):
        raise RuntimeError("kaboom")

    @method("demo.family.*")
    def family(data):
        return {"family": True}

    if __name__ == "__main__":
        main()
    """
)


@pytest.fixture()
def run_adapter(tmp_path: Path):
    script = tmp_path / "adapter.py"
    script.write_text(ADAPTER)

    def run(method_id: str, payload: object = None, raw: str | None = None):
        input_path = tmp_path / "input.json"
        input_path.write_text(raw if raw is not None else json.dumps(payload))
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(SHARED_DIR),  # as in the image: the SDK is a top-level module
            "SANDBOX_RUN_ID": "run-1",
            "SANDBOX_METHOD_ID": method_id,
            "SANDBOX_ATTEMPT": "1",
            "SANDBOX_INPUT_PATH": str(input_path),
        }
        return subprocess.run(
            [sys.executable, str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    return run


def _evaluations(stdout: str) -> list[dict]:
    return [
        json.loads(line[len(EVALUATION_MARKER) :])
        for line in stdout.splitlines()
        if line.startswith(EVALUATION_MARKER)
    ]


def test_constants() -> None:
    assert EVALUATION_MARKER == "::sandbox-evaluation::"
    assert DEFAULT_INPUT_PATH == "/sandbox/input/input.json"


def test_success_prints_compact_marker_line_and_exits_0(run_adapter) -> None:
    proc = run_adapter("demo.ok", {"n": 21})
    assert proc.returncode == 0, proc.stderr
    assert "log line on stdout" in proc.stdout
    assert f'{EVALUATION_MARKER}{{"doubled":42}}' in proc.stdout.splitlines()


def test_last_evaluation_wins(run_adapter) -> None:
    proc = run_adapter("demo.twice", {})
    assert proc.returncode == 0
    assert _evaluations(proc.stdout) == [{"draft": True}, {"final": True}]


def test_adapter_failure_exits_1_with_evaluation(run_adapter) -> None:
    proc = run_adapter("demo.fail", {})
    assert proc.returncode == 1
    assert _evaluations(proc.stdout) == [{"passed": False}]
    assert "threshold not met" in proc.stderr


def test_bad_input_exits_2(run_adapter) -> None:
    proc = run_adapter("demo.bad", {"n": -1})
    assert proc.returncode == 2
    assert "n must be positive" in proc.stderr
    assert _evaluations(proc.stdout) == []


@pytest.mark.parametrize("raw", ["[1, 2]", "{not json", ""])
def test_input_that_is_not_a_json_object_exits_2(run_adapter, raw: str) -> None:
    proc = run_adapter("demo.ok", raw=raw)
    assert proc.returncode == 2
    assert "bad input" in proc.stderr


def test_unknown_method_exits_3_and_lists_known_methods(run_adapter) -> None:
    proc = run_adapter("demo.nope", {})
    assert proc.returncode == 3
    assert "demo.nope" in proc.stderr
    assert "demo.ok" in proc.stderr and "demo.family.*" in proc.stderr


def test_prefix_registration(run_adapter) -> None:
    proc = run_adapter("demo.family.anything", {})
    assert proc.returncode == 0
    assert _evaluations(proc.stdout) == [{"family": True}]


def test_crash_exits_4_with_traceback(run_adapter) -> None:
    proc = run_adapter("demo.crash", {})
    assert proc.returncode == 4
    assert "Traceback" in proc.stderr and "kaboom" in proc.stderr
    assert _evaluations(proc.stdout) == []
