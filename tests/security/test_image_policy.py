"""Image policy through the real fleet: allow-list, digest pinning and signatures."""

from __future__ import annotations

import pytest

from tests.builders import TEST_IMAGE, run_request
from tests.security.conftest import REPO, Images, SecurityFleet
from tests.security.registry import build_adapter, push

pytestmark = pytest.mark.xdist_group("security")

PROBE = {"action": "probe"}


def test_a_signed_image_from_an_allowed_registry_runs_pinned_to_its_digest(
    security_fleet: SecurityFleet, images: Images
) -> None:
    run = security_fleet.run(run_request(adapterImage=images.signed, input=PROBE))
    assert run["status"] == "succeeded", run["statusReason"]
    assert run["evaluation"]["variant"] == "signed"
    name = images.signed.rsplit(":", 1)[0]
    assert run["imageDigest"] == f"{name}@{images.digests['signed']}"


def test_an_unsigned_image_is_refused_and_a_dry_run_says_so(
    security_fleet: SecurityFleet, images: Images
) -> None:
    for dry in (False, True):
        run = security_fleet.run(run_request(adapterImage=images.unsigned, input=PROBE, dryRun=dry))
        assert run["status"] == "error"
        assert run["statusReason"].startswith("image_policy: ")
        assert "is not signed" in run["statusReason"]


def test_a_signature_by_an_unknown_key_is_refused(
    security_fleet: SecurityFleet, images: Images
) -> None:
    run = security_fleet.run(run_request(adapterImage=images.wrong_key, input=PROBE))
    assert run["status"] == "error"
    assert run["statusReason"].startswith("image_policy: no valid signature")
    assert "no configured key" in run["statusReason"]


def test_a_signature_of_another_digest_is_refused(
    security_fleet: SecurityFleet, images: Images
) -> None:
    run = security_fleet.run(run_request(adapterImage=images.other_digest, input=PROBE))
    assert run["status"] == "error"
    assert "signature for another digest" in run["statusReason"]


def test_a_registry_not_on_the_list_is_refused(security_fleet: SecurityFleet) -> None:
    run = security_fleet.run(run_request(adapterImage=TEST_IMAGE, input=PROBE, dryRun=True))
    assert run["status"] == "error"
    assert run["statusReason"].startswith("image_policy: registry localhost:5000 is not allowed")


def test_a_tag_moved_after_provisioning_does_not_change_what_runs(
    security_fleet: SecurityFleet, images: Images, docker_client
) -> None:
    security_fleet.stop("executor")
    try:
        run_id = security_fleet.submit(run_request(adapterImage=images.moving, input=PROBE))
        security_fleet.wait_status(run_id, "ready")
        # The tag now names other (also signed) content, in the registry and on the engine.
        images.ids.append(build_adapter(docker_client, images.moving, variant="moved"))
        push(docker_client, images.moving)
        moved = images.registry.manifest_digest(REPO, "moving")
        assert moved != images.digests["moving"]
        images.registry.sign(REPO, moved, images.good_key)  # type: ignore[attr-defined]
    finally:
        security_fleet.start("executor")
    run = security_fleet.wait(run_id)
    assert run["status"] == "succeeded", run["statusReason"]
    assert run["evaluation"]["variant"] == "moving"
    assert run["imageDigest"].endswith(images.digests["moving"])
