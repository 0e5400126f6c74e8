"""Blob storage for run artefacts (logs, result, metrics) under ``sandbox-runs/<runId>/``."""

from __future__ import annotations

from typing import Protocol

CONTAINER = "sandbox-runs"


class BlobNotFound(KeyError):
    """No blob at that path."""


class BlobStore(Protocol):
    """Where finished runs keep their artefacts."""

    def put(self, path: str, data: bytes, content_type: str) -> str:
        """Store ``data`` at ``path`` (overwriting); return a location a person can use."""
        ...

    def get(self, path: str) -> bytes:
        """Return the blob at ``path``; raise BlobNotFound if there is none."""
        ...


def run_prefix(run_id: str) -> str:
    """Return the folder of one run's artefacts."""
    return f"{CONTAINER}/{run_id}/"
