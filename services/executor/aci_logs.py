"""Keep an ACI container's whole log although ACI keeps only its tail.

ACI's log API returns a window: the last 4 MB while the container runs, only the last 16 KB or
1,000 lines once it has stopped. Each poll reads the window and appends to our copy only what
follows the part it already has, found by matching the window's start against the copy's end
(byte overlap, so a window cut mid-line still lines up). As long as a container prints less
than one window (minus the 256 bytes of overlap that prove continuity) between two polls,
nothing is lost. When the window has moved past the copy's
end (or the first read already shows a full window), the output in between is gone: the copy
records a gap, which becomes a marker line in the stored log and marks the run's logs truncated.

The copy holds the container's raw output, secrets included, because the redactor must see
everything again on every poll (``::add-mask::`` lines, PEM blocks, the first lines for the
preview: exactly the replay a re-attaching Docker executor does). So it is encrypted
(AES-GCM, bound to the run and attempt) before it reaches the blob store, under
``<runId>/aci/``, and deleted as soon as the attempt's outcome is committed. The key comes from
``SANDBOX_ACI_LOG_KEY_REF`` (a secret reference every executor resolves to the same value), or,
on one host, from the state directory's signing key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.backends import aci
from shared.storage import BlobNotFound, BlobStore, run_prefix

if TYPE_CHECKING:
    from shared.config import Settings

GAP_LINE = (
    b"[sandbox-runner] log gap: ACI keeps only the tail of a container's log, and more was "
    b"printed between two reads than it keeps; the output printed here is lost"
)
_DATA, _GAP = b"D", b"G"
_NONCE = 12
# The least overlap that proves a window continues the copy (a few bytes match by chance):
# nothing is lost while less than a window minus this much is printed between two reads.
_MIN_OVERLAP = 256


class CopyUnreadable(Exception):
    """The stored copy cannot be decrypted: executors do not share the key."""


def copy_key(settings: Settings) -> bytes:
    """Return the 32-byte key of the log copies (the same in every executor of a fleet)."""
    if settings.aci_log_key_ref:
        from shared.secrets import provider_for

        secret = provider_for(settings).get(settings.aci_log_key_ref).encode()
    else:
        from shared.storage.factory import signing_key

        secret = signing_key(settings.blob_signing_key_path)
    # Derived, so the signing key itself never encrypts anything.
    return hmac.new(secret, b"sandbox-runner aci log copy v1", hashlib.sha256).digest()


def copy_prefix(run_id: str) -> str:
    """Return the folder of a run's log copies (one blob per attempt)."""
    return f"{run_prefix(run_id)}aci/"


def discard(blobs: BlobStore, run_id: str) -> None:
    """Delete a run's log copies (its outcome is committed: the raw output is not needed)."""
    blobs.delete_prefix(copy_prefix(run_id))


def splice(seen: bytes, window: bytes, *, window_full: bool) -> tuple[bytes, bool]:
    """Return the part of ``window`` that follows ``seen``, and whether output was lost between.

    ``window`` is the log's tail now, ``seen`` the output already copied (since the last gap).
    The window may have slid: it starts somewhere in ``seen`` (or past its end). It continues
    the copy only if they overlap by ``_MIN_OVERLAP`` bytes (or all of a shorter copy): a few
    bytes, such as the end of a line, match by chance. The longest overlap wins, i.e. the
    smallest slide, so repeated identical output is not taken for new. ``window_full`` says
    the window may have slid although nothing was copied yet.
    """
    m, w = len(seen), len(window)
    if not window:
        return b"", False
    if not seen:
        return window, window_full
    need = min(m, _MIN_OVERLAP)
    if w < need:
        return window, True
    view, probe = memoryview(seen), window[:need]
    start = seen.find(probe, max(0, m - w))  # an overlap cannot be longer than the window
    while start != -1 and start <= m - need:
        if view[start:] == window[: m - start]:
            return window[m - start :], False
        start = seen.find(probe, start + 1)
    return window, True


@dataclass
class LogCopy:
    """One attempt's raw output as records: data as read, and gaps where output was lost."""

    blobs: BlobStore
    key: bytes
    run_id: str
    attempt: int
    records: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"{copy_prefix(self.run_id)}attempt-{self.attempt}.bin"

    @property
    def gaps(self) -> int:
        """Return how many times output was lost."""
        return sum(1 for kind, _ in self.records if kind == _GAP)

    @classmethod
    def load(cls, blobs: BlobStore, key: bytes, run_id: str, attempt: int) -> LogCopy:
        """Read the attempt's copy (empty if none); raise CopyUnreadable if it cannot be read."""
        copy = cls(blobs, key, run_id, attempt)
        try:
            data = blobs.get(copy.path)
        except BlobNotFound:
            return copy
        aead, offset = AESGCM(key), 0
        while offset < len(data):
            if offset + 4 > len(data):
                raise CopyUnreadable("the ACI log copy is damaged (a record was cut short)")
            (size,) = struct.unpack_from(">I", data, offset)
            sealed = data[offset + 4 : offset + 4 + size]
            offset += 4 + size
            try:
                plain = aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], copy._aad)
            except (InvalidTag, ValueError):
                raise CopyUnreadable(
                    "the ACI log copy cannot be decrypted (damaged, or executors do not share "
                    "the key: SANDBOX_ACI_LOG_KEY_REF)"
                ) from None
            copy.records.append((plain[:1], plain[1:]))
        return copy

    def extend(self, window: bytes, *, stopped: bool) -> bytes:
        """Append what ``window`` (the log API's answer now) adds; return it.

        ``stopped``: the container has stopped, so ACI keeps only its last 16 KB or 1,000
        lines (a full window may have dropped output even before the first read).
        """
        limit = aci.LOG_BYTES_STOPPED if stopped else aci.LOG_BYTES_RUNNING
        full = len(window) >= limit - 4 or (
            stopped and window.count(b"\n") >= aci.LOG_LINES_STOPPED
        )
        new, gap = splice(self._since_gap(), window, window_full=full)
        added: list[tuple[bytes, bytes]] = []
        if gap:
            added.append((_GAP, b""))
        if new:
            added.append((_DATA, new))
        if added:
            self.blobs.append(self.path, b"".join(self._seal(kind, data) for kind, data in added))
            self.records += added
        return new

    def text(self) -> bytes:
        """Return the output to store: the data, with a marker line where a gap is."""
        out = bytearray()
        for kind, data in self.records:
            if kind == _GAP:
                if out and not out.endswith(b"\n"):
                    out += b"\n"  # the line the gap cut off ends here
                out += GAP_LINE + b"\n"
            else:
                out += data
        return bytes(out)

    def _since_gap(self) -> bytes:
        tail: list[bytes] = []
        for kind, data in reversed(self.records):
            if kind == _GAP:
                break
            tail.append(data)
        return b"".join(reversed(tail))

    @property
    def _aad(self) -> bytes:
        return f"{self.run_id}:{self.attempt}".encode()

    def _seal(self, kind: bytes, data: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = nonce + AESGCM(self.key).encrypt(nonce, kind + data, self._aad)
        return struct.pack(">I", len(sealed)) + sealed
