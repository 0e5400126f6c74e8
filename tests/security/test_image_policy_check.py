"""shared.image_policy.check in process, against the test's registry."""

from __future__ import annotations

import dataclasses
import socket
import threading

import pytest

from shared import image_policy
from shared.config import Settings
from tests.security.conftest import Images

pytestmark = pytest.mark.xdist_group("security")


def settings(images: Images, **changes: object) -> Settings:
    return dataclasses.replace(Settings(), image_registries=images.registry.host, **changes)


def test_a_tag_is_pinned_to_the_registry_digest(images: Images) -> None:
    decision = image_policy.check(settings(images), images.unsigned)
    name = images.unsigned.rsplit(":", 1)[0]
    assert decision.ref == f"{name}@{images.digests['unsigned']}"
    assert decision.signed is False


def test_require_digest_refuses_a_tag_and_accepts_a_digest(images: Images) -> None:
    strict = settings(images, image_require_digest=True)
    with pytest.raises(image_policy.ImagePolicyError, match="a digest reference"):
        image_policy.check(strict, images.unsigned)
    name = images.unsigned.rsplit(":", 1)[0]
    pinned = f"{name}@{images.digests['unsigned']}"
    assert image_policy.check(strict, pinned).ref == pinned


def test_a_digest_the_registry_does_not_have_is_refused_when_required(images: Images) -> None:
    name = images.unsigned.rsplit(":", 1)[0]
    with pytest.raises(image_policy.ImagePolicyError, match="is not in registry"):
        image_policy.check(settings(images, image_require_digest=True), f"{name}@sha256:{'0' * 64}")


def test_signatures_are_checked_with_the_configured_keys(images: Images, key_dir) -> None:
    signed = settings(
        images,
        image_require_signature=True,
        image_signing_keys=f"file:{key_dir / 'good.pub.pem'}",
    )
    assert image_policy.check(signed, images.signed).signed is True
    with pytest.raises(image_policy.ImagePolicyError, match="no configured key"):
        image_policy.check(signed, images.wrong_key)
    nokeys = dataclasses.replace(signed, image_signing_keys="")
    with pytest.raises(image_policy.ImagePolicyError, match="no signing key is configured"):
        image_policy.check(nokeys, images.signed)


def test_an_unreachable_registry_is_an_error_only_when_something_is_required() -> None:
    # Port 9 on loopback: refused at once; nothing leaves the machine.
    base = dataclasses.replace(Settings(), image_registries="127.0.0.1:9")
    assert image_policy.check(base, "127.0.0.1:9/a/b:c").ref == "127.0.0.1:9/a/b:c"
    with pytest.raises(image_policy.ImagePolicyError, match="unreachable"):
        image_policy.check(
            dataclasses.replace(base, image_require_signature=True), "127.0.0.1:9/a/b:c"
        )


def test_a_registry_that_refused_is_left_alone_for_a_while_by_runs_that_do_not_need_it() -> None:
    # A loopback listener that takes each connection and hangs up: the registry is "down".
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    accepted: list[int] = []

    def hang_up(count: int) -> None:
        for _ in range(count):
            try:
                conn, _ = listener.accept()
            except OSError:  # closed by the test, or timed out
                return
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=hang_up, args=(2,), daemon=True)
    thread.start()
    registry = f"127.0.0.1:{port}"
    base = dataclasses.replace(Settings(), image_registries=registry)
    ref = f"{registry}/a/b:c"
    try:
        assert image_policy.check(base, ref).ref == ref
        assert image_policy.check(base, ref).ref == ref
        assert len(accepted) == 1  # the second run did not ask
        # A run that needs the registry still asks it, and is refused as before.
        with pytest.raises(image_policy.ImagePolicyError, match="unreachable"):
            image_policy.check(dataclasses.replace(base, image_require_signature=True), ref)
        assert len(accepted) == 2
    finally:
        listener.close()
        thread.join(timeout=10)


def test_default_allow_list_is_the_acr_server_and_localhost_5000() -> None:
    assert image_policy.allowed_registries(Settings()) == ["localhost:5000"]
    acr = dataclasses.replace(Settings(), acr_login_server="myacr.azurecr.io")
    assert image_policy.allowed_registries(acr) == ["myacr.azurecr.io", "localhost:5000"]
    with pytest.raises(image_policy.ImagePolicyError, match=r"docker\.io is not allowed"):
        image_policy.check(Settings(), "sandbox-runner/python-base:dev")
