"""The project's exception tree; vendor errors are translated into these at the boundary.

RunnerError
├── RunNotFound
├── PolicyViolation          a request or override beyond a guardrail (422)
├── Unavailable              Postgres or the broker cannot be reached (503)
└── BackendError             the container engine failed
    ├── BackendUnavailable   transient: the engine is unreachable (retried)
    └── ImageNotFound        permanent: the image is neither present nor pullable
"""

from __future__ import annotations


class RunnerError(Exception):
    """Base of every error this project raises on purpose."""


class RunNotFound(RunnerError):
    """No run has that id."""


class PolicyViolation(RunnerError):
    """A resource request or override goes beyond a guardrail."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class Unavailable(RunnerError):
    """A dependency (Postgres, the broker) cannot be reached."""


class BackendError(RunnerError):
    """The container backend failed."""


class BackendUnavailable(BackendError):
    """The container engine cannot be reached; worth retrying."""


class ImageNotFound(BackendError):
    """The image is neither present on the engine nor pullable."""
