"""Azure Blob Storage (and Azurite) behind the BlobStore interface.

Logs are *append blobs*: each append is durable the moment it returns, so a crash mid-run keeps
everything written so far. Staged blocks would stay invisible until a final commit that a crash
never makes. Download links are SAS tokens: an account SAS when the store was opened with an
account key (connection string, Azurite), a user delegation SAS when it uses a managed identity.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    generate_blob_sas,
)

from shared.storage import CONTAINER, BlobNotFound, StorageError

# An append block holds at most 4 MiB.
_MAX_BLOCK = 4 * 1024 * 1024


class AzureBlobStore:
    """Blobs in the ``sandbox-runs`` container of one storage account."""

    def __init__(self, service: BlobServiceClient, container: str = CONTAINER) -> None:
        self.service = service
        self.container = service.get_container_client(container)
        self._ready = False

    @classmethod
    def from_settings(
        cls, connection_string: str | None, account_url: str | None
    ) -> AzureBlobStore:
        """Open the store with a connection string, or an account URL and a managed identity."""
        if connection_string:
            return cls(BlobServiceClient.from_connection_string(connection_string))
        if not account_url:
            raise StorageError("the azure blob backend needs a connection string or account URL")
        from azure.identity import DefaultAzureCredential

        return cls(BlobServiceClient(account_url, credential=DefaultAzureCredential()))

    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise StorageError(f"cannot open container {self.container.container_name}") from exc
        self._ready = True

    def put(self, path: str, data: bytes, content_type: str) -> None:
        self._ensure()
        try:
            self.container.upload_blob(
                path, data, overwrite=True, content_settings=ContentSettings(content_type)
            )
        except AzureError as exc:
            raise StorageError(f"cannot write {path}") from exc

    def append(self, path: str, data: bytes) -> None:
        self._ensure()
        blob = self.container.get_blob_client(path)
        try:
            for start in range(0, len(data), _MAX_BLOCK):
                chunk = data[start : start + _MAX_BLOCK]
                try:
                    blob.append_block(chunk)
                except ResourceNotFoundError:
                    blob.create_append_blob(
                        content_settings=ContentSettings("text/plain; charset=utf-8")
                    )
                    blob.append_block(chunk)
        except AzureError as exc:
            raise StorageError(f"cannot append to {path}") from exc

    def size(self, path: str) -> int:
        self._ensure()
        try:
            return int(self.container.get_blob_client(path).get_blob_properties().size)
        except ResourceNotFoundError:
            return 0
        except AzureError as exc:
            raise StorageError(f"cannot read {path}") from exc

    def get(self, path: str) -> bytes:
        self._ensure()
        try:
            return bytes(self.container.download_blob(path).readall())
        except ResourceNotFoundError:
            raise BlobNotFound(path) from None
        except AzureError as exc:
            raise StorageError(f"cannot read {path}") from exc

    def delete_prefix(self, prefix: str) -> tuple[int, int]:
        self._ensure()
        count = total = 0
        try:
            for item in self.container.list_blobs(name_starts_with=prefix):
                self.container.delete_blob(item.name)
                count += 1
                total += int(item.size or 0)
        except AzureError as exc:
            raise StorageError(f"cannot delete {prefix}") from exc
        return count, total

    def download_url(self, path: str, expires_s: int) -> str:
        self._ensure()
        now = datetime.now(UTC)
        expiry = now + timedelta(seconds=expires_s)
        key: dict[str, Any]
        account_key = getattr(self.service.credential, "account_key", None)
        if account_key:
            key = {"account_key": account_key}
        else:
            key = {"user_delegation_key": self.service.get_user_delegation_key(now, expiry)}
        token = generate_blob_sas(
            account_name=str(self.service.account_name),
            container_name=self.container.container_name,
            blob_name=path,
            permission=BlobSasPermissions(read=True),
            expiry=expiry,
            start=now - timedelta(minutes=1),
            **key,
        )
        return f"{self.container.get_blob_client(path).url}?{token}"
