"""A blob store on the local file system: the default on one machine."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from shared.storage import BlobNotFound


class LocalBlobStore:
    """Keep blobs as files below ``root``; writes are atomic (write, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, path: str) -> Path:
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):
            raise ValueError(f"blob path escapes the store: {path!r}")
        return target

    def put(self, path: str, data: bytes, content_type: str) -> str:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
        return target.as_uri()

    def get(self, path: str) -> bytes:
        try:
            return self._path(path).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(path) from None
