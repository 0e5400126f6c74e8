"""How the finalizer judges a finished container (pure logic, no database)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from services.finalizer.finalize import judge, parse_evaluation
from shared.db.runs import Run
from shared.states import RunStatus


def finished_run(**overrides: Any) -> Run:
    now = datetime.now(UTC)
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(Run)}
    values.update(
        id=uuid.uuid4(),
        persona_id=uuid.uuid4(),
        method_id="test.run",
        adapter_image="img",
        input={},
        dry_run=False,
        status=RunStatus.FINALIZING,
        attempt=1,
        log_lines=0,
        log_bytes=0,
        logs_truncated=False,
        queued_at=now,
        updated_at=now,
        exit_code=0,
        oom_killed=False,
        wall_timed_out=False,
        resources={"cpu": 1.0, "memoryMb": 64, "timeoutS": 5},
        evaluation_raw='{"ok": true}',
    )
    values.update(overrides)
    return Run(**values)


def test_exit_zero_with_an_object_succeeds() -> None:
    assert judge(finished_run()) == (RunStatus.SUCCEEDED, None, {"ok": True})


def test_a_run_stopped_for_its_output_fails_with_output_limit() -> None:
    status, reason, _ = judge(
        finished_run(output_limited=True, exit_code=137, resources={"logCapMb": 1})
    )
    assert status is RunStatus.FAILED
    assert (
        reason == "output_limit: the adapter printed more than its log cap of 1 MiB and was stopped"
    )


def test_timeout_wins_over_the_exit_code_of_the_kill() -> None:
    status, reason, _ = judge(finished_run(wall_timed_out=True, exit_code=137))
    assert status is RunStatus.TIMED_OUT
    assert reason == "timeout: killed at the wall limit of 5 s"


def test_oom_fails_with_reason_oom() -> None:
    status, reason, _ = judge(finished_run(oom_killed=True, exit_code=137))
    assert status is RunStatus.FAILED
    assert reason is not None and reason.startswith("oom:") and "64 MiB" in reason


def test_non_zero_exit_fails_and_says_what_the_code_means() -> None:
    status, reason, evaluation = judge(finished_run(exit_code=2, evaluation_raw=None))
    assert status is RunStatus.FAILED
    assert reason == "exit_code: the adapter exited 2 (the input does not fit the method)"
    assert evaluation is None


def test_missing_or_invalid_evaluation_fails() -> None:
    status, reason, _ = judge(finished_run(evaluation_raw=None))
    assert (status, reason.split(":")[0]) == (RunStatus.FAILED, "evaluation_missing")  # type: ignore[union-attr]
    status, reason, _ = judge(finished_run(evaluation_raw="{not json"))
    assert (status, reason.split(":")[0]) == (RunStatus.FAILED, "evaluation_invalid")  # type: ignore[union-attr]
    assert parse_evaluation("[1, 2]")[1] == "evaluation_invalid: expected a JSON object, got list"
