from __future__ import annotations

import itertools

import pytest

from shared.states import ALLOWED, TERMINAL, RunStatus, can_move, sources_of


def test_happy_path_is_allowed_in_order() -> None:
    path = [
        RunStatus.QUEUED,
        RunStatus.PROVISIONING,
        RunStatus.READY,
        RunStatus.RUNNING,
        RunStatus.FINALIZING,
        RunStatus.SUCCEEDED,
    ]
    for source, target in itertools.pairwise(path):
        assert can_move(source, target), f"{source} -> {target}"


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_are_never_left(terminal: RunStatus) -> None:
    assert ALLOWED[terminal] == frozenset()
    assert not any(can_move(terminal, other) for other in RunStatus)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (RunStatus.QUEUED, RunStatus.RUNNING),
        (RunStatus.READY, RunStatus.SUCCEEDED),
        (RunStatus.RUNNING, RunStatus.SUCCEEDED),
        (RunStatus.FINALIZING, RunStatus.RUNNING),
    ],
)
def test_skipping_a_phase_is_refused(source: RunStatus, target: RunStatus) -> None:
    assert not can_move(source, target)


def test_only_provisioning_can_succeed_without_running_for_dry_runs() -> None:
    assert set(sources_of(RunStatus.SUCCEEDED)) == {RunStatus.PROVISIONING, RunStatus.FINALIZING}


def test_every_live_status_can_end_in_error_or_cancelled() -> None:
    for status in set(RunStatus) - TERMINAL:
        assert can_move(status, RunStatus.ERROR)
        assert can_move(status, RunStatus.CANCELLED)
