"""A blob store on the local file system, with HMAC-signed download links served by the api."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from shared.storage import CONTAINER, BlobNotFound


class LocalBlobStore:
    """Keep blobs as files below ``root/sandbox-runs``; ``put`` is atomic (write, then rename)."""

    def __init__(self, root: Path, signing_key: bytes, public_base: str = "") -> None:
        self.root = (root / CONTAINER).resolve()
        self.signing_key = signing_key
        self.public_base = public_base

    def _path(self, path: str) -> Path:
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root) or target == self.root:
            raise BlobNotFound(path)
        return target

    def put(self, path: str, data: bytes, content_type: str) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)

    def append(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("ab") as handle:
            handle.write(data)

    def size(self, path: str) -> int:
        try:
            return self._path(path).stat().st_size
        except FileNotFoundError:
            return 0

    def get(self, path: str) -> bytes:
        try:
            return self._path(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(path) from None

    def delete_prefix(self, prefix: str) -> tuple[int, int]:
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return 0, 0
        files = [p for p in folder.rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        shutil.rmtree(folder, ignore_errors=True)
        return len(files), total

    def download_url(self, path: str, expires_s: int) -> str:
        expires = int(time.time()) + expires_s
        query = urlencode({"expires": expires, "sig": sign(self.signing_key, path, expires)})
        return f"{self.public_base}/api/sandbox/blobs/{quote(path)}?{query}"


def sign(key: bytes, path: str, expires: int) -> str:
    """Return the HMAC-SHA256 signature of a download link."""
    return hmac.new(key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def verify(key: bytes, path: str, expires: str, signature: str) -> str | None:
    """Return None if the link is valid now, else why not ("expired" or "bad signature")."""
    try:
        when = int(expires)
    except ValueError:
        return "bad signature"
    if not hmac.compare_digest(sign(key, path, when), signature):
        return "bad signature"
    if when < time.time():
        return "expired"
    return None
