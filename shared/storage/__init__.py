"""Blob storage for run artefacts: ``<runId>/stdout.log``, ``stderr.log``, ``result.json``,
``metrics.json`` in the container ``sandbox-runs``.

Two backends behind one interface: a local directory (the default on one machine) and Azure Blob
Storage (``azure.py``; Azurite in tests). Logs are appended while the run goes, so a crash keeps
what was written; vendor errors are translated into BlobNotFound / StorageError here.
"""

from __future__ import annotations

from typing import Protocol

CONTAINER = "sandbox-runs"
STREAMS = ("stdout", "stderr")


class StorageError(Exception):
    """The blob store failed."""


class BlobNotFound(KeyError):
    """No blob at that path."""


class BlobStore(Protocol):
    """Where runs keep their artefacts; paths are relative to the ``sandbox-runs`` container."""

    def put(self, path: str, data: bytes, content_type: str) -> None:
        """Store ``data`` at ``path``, replacing what was there."""
        ...

    def append(self, path: str, data: bytes) -> None:
        """Append ``data`` to the blob at ``path``, creating it if missing."""
        ...

    def size(self, path: str) -> int:
        """Return the blob's size in bytes, 0 if it does not exist."""
        ...

    def get(self, path: str) -> bytes:
        """Return the blob at ``path``; raise BlobNotFound if there is none."""
        ...

    def delete_prefix(self, prefix: str) -> tuple[int, int]:
        """Delete every blob under ``prefix``; return (blobs, bytes) removed."""
        ...

    def download_url(self, path: str, expires_s: int) -> str:
        """Return a read-only link to the blob that stops working after ``expires_s`` seconds."""
        ...


def log_path(run_id: str, stream: str) -> str:
    """Return the path of one stream's full redacted log."""
    return f"{run_id}/{stream}.log"


def run_prefix(run_id: str) -> str:
    """Return the folder of one run's artefacts."""
    return f"{run_id}/"
