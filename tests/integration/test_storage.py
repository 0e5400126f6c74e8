"""One storage test suite, run against the local directory store and Azurite."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from shared.storage import BlobNotFound, BlobStore, log_path
from shared.storage import local as local_store
from shared.storage.azure import AzureBlobStore
from shared.storage.local import LocalBlobStore


@pytest.fixture(params=["local", "azurite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path, b"k" * 32)
    else:
        yield AzureBlobStore.from_settings(request.getfixturevalue("azurite"), None)


def test_put_get_and_missing(store: BlobStore) -> None:
    run = str(uuid.uuid4())
    store.put(f"{run}/result.json", b'{"ok": true}', "application/json")
    store.put(f"{run}/result.json", b'{"ok": false}', "application/json")
    assert store.get(f"{run}/result.json") == b'{"ok": false}'
    with pytest.raises(BlobNotFound):
        store.get(f"{run}/missing.json")
    assert store.size(f"{run}/missing.json") == 0


def test_appends_accumulate_and_survive_as_written(store: BlobStore) -> None:
    path = log_path(str(uuid.uuid4()), "stdout")
    for i in range(5):
        store.append(path, f"line {i}\n".encode())
    assert store.get(path) == b"".join(f"line {i}\n".encode() for i in range(5))
    assert store.size(path) == len(store.get(path))


def test_a_large_append_is_split_into_blocks(store: BlobStore) -> None:
    path = log_path(str(uuid.uuid4()), "stderr")
    data = b"x" * (9 * 1024 * 1024 + 5)
    store.append(path, data)
    assert store.size(path) == len(data)


def test_delete_prefix_removes_one_run_and_counts_it(store: BlobStore) -> None:
    run, other = str(uuid.uuid4()), str(uuid.uuid4())
    store.append(log_path(run, "stdout"), b"12345")
    store.put(f"{run}/result.json", b"{}", "application/json")
    store.put(f"{other}/result.json", b"{}", "application/json")
    assert store.delete_prefix(f"{run}/") == (2, 7)
    assert store.size(log_path(run, "stdout")) == 0
    assert store.get(f"{other}/result.json") == b"{}"


def test_paths_cannot_escape_the_container(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, b"k" * 32)
    with pytest.raises(BlobNotFound):
        store.get("../../etc/passwd")


def test_azure_download_links_work_then_expire_and_refuse_tampering(azurite: str) -> None:
    store = AzureBlobStore.from_settings(azurite, None)
    path = log_path(str(uuid.uuid4()), "stdout")
    store.append(path, b"hello\n")
    url = store.download_url(path, expires_s=2)
    assert requests.get(url, timeout=10).content == b"hello\n"
    tampered = url.replace("stdout.log", "stderr.log")
    assert requests.get(tampered, timeout=10).status_code == 403
    time.sleep(3)
    assert requests.get(url, timeout=10).status_code == 403


def test_local_link_signatures_expire_and_refuse_tampering() -> None:
    key = b"s" * 32
    store = LocalBlobStore(Path("/nonexistent"), key)
    url = urlparse(store.download_url("r/stdout.log", expires_s=60))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path == "/api/sandbox/blobs/r/stdout.log"
    assert local_store.verify(key, "r/stdout.log", query["expires"], query["sig"]) is None
    assert local_store.verify(key, "r/stderr.log", query["expires"], query["sig"]) == (
        "bad signature"
    )
    past = str(int(time.time()) - 1)
    assert (
        local_store.verify(
            key, "r/stdout.log", past, local_store.sign(key, "r/stdout.log", int(past))
        )
        == "expired"
    )
