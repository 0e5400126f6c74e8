from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigError, load_settings


def test_defaults_without_environment() -> None:
    settings = load_settings({})
    assert settings.max_input_bytes == 1024 * 1024
    assert settings.broker_url.startswith("redis://")
    assert settings.blob_dir == Path(".run/blobs")


def test_values_are_typed_and_blob_dir_follows_state_dir() -> None:
    settings = load_settings(
        {
            "SANDBOX_MAX_INPUT_BYTES": "2048",
            "SANDBOX_STATE_DIR": "/tmp/x",
            "SANDBOX_KEEP_IP_ADDRESSES": "false",
        }
    )
    assert settings.max_input_bytes == 2048
    assert settings.blob_dir == Path("/tmp/x/blobs")
    assert settings.keep_ip_addresses is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SANDBOX_MAX_INPUT_BYTES", "lots"),
        ("SANDBOX_KEEP_IP_ADDRESSES", "maybe"),
        ("SANDBOX_LOG_FORMAT", "xml"),
    ],
)
def test_malformed_values_fail_fast_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})
