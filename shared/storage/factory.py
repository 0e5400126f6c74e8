"""Open the blob store the settings name."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from shared.config import Settings
from shared.storage import BlobStore


def signing_key(path: Path) -> bytes:
    """Return the key that signs local download links, creating it (0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # fails if another process won the race: both then read its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes()


def open_blob_store(settings: Settings) -> BlobStore:
    """Return the local or Azure store; nothing connects until first use."""
    if settings.blob_backend == "azure":
        from shared.storage.azure import AzureBlobStore

        return AzureBlobStore.from_settings(
            settings.azure_storage_connection_string, settings.azure_storage_account_url
        )
    from shared.storage.local import LocalBlobStore

    return LocalBlobStore(settings.blob_dir, signing_key(settings.blob_signing_key_path))
