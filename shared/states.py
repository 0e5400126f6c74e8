"""The run state machine: the one contract every service follows."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run's status, in lifecycle order."""

    QUEUED = "queued"
    PROVISIONING = "provisioning"
    READY = "ready"
    RUNNING = "running"
    FINALIZING = "finalizing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ERROR = "error"


TERMINAL: frozenset[RunStatus] = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELLED,
        RunStatus.ERROR,
    }
)

# Each status may move only to these. A redelivered task re-claims its own status (x -> x), which
# is why a status may follow itself for the claim steps.
ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.PROVISIONING, RunStatus.CANCELLED, RunStatus.ERROR}),
    RunStatus.PROVISIONING: frozenset(
        {
            RunStatus.PROVISIONING,
            RunStatus.READY,
            RunStatus.SUCCEEDED,  # dry run
            RunStatus.CANCELLED,
            RunStatus.ERROR,
        }
    ),
    RunStatus.READY: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.ERROR}),
    RunStatus.RUNNING: frozenset(
        {RunStatus.RUNNING, RunStatus.FINALIZING, RunStatus.CANCELLED, RunStatus.ERROR}
    ),
    RunStatus.FINALIZING: frozenset(
        {
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.TIMED_OUT,
            RunStatus.CANCELLED,
            RunStatus.ERROR,
        }
    ),
}
for _terminal in TERMINAL:
    ALLOWED[_terminal] = frozenset()


def sources_of(target: RunStatus) -> tuple[RunStatus, ...]:
    """Return every status from which ``target`` may be reached."""
    return tuple(s for s, nexts in ALLOWED.items() if target in nexts)


def can_move(source: RunStatus, target: RunStatus) -> bool:
    """Tell whether the state machine allows ``source -> target``."""
    return target in ALLOWED[source]
