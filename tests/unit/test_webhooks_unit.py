"""Signatures (documented vectors), URL safety, secret references, endpoints, OIDC rules."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from shared.config import ConfigError, load_settings
from shared.github_oidc import load_rules
from shared.secrets import EnvFileSecretProvider, SecretError, ref_allowed
from shared.webhooks import signing
from shared.webhooks.endpoints import CallbackError, load_endpoints, resolve
from shared.webhooks.ssrf import AllowList, UnsafeURL, check_url

# The vector in the README ("Webhooks and GitHub Actions"): keep both in step.
README_SECRET = "whsec_example_secret"
README_TIMESTAMP = 1767225600
README_BODY = b'{"runId":"0b8e4a4e-5f0c-4d8a-9a53-1c2d3e4f5a6b","status":"succeeded"}'
README_SIGNATURE = (
    "t=1767225600,v1=c5be54eba987acdd19dc3d848288b694fcb9bd274e61e2592b665261a48ed4bd"
)
README = Path(__file__).resolve().parents[2] / "README.md"


def test_our_signature_matches_the_documented_vector() -> None:
    assert signing.sign(README_SECRET, README_BODY, README_TIMESTAMP) == README_SIGNATURE
    # What the README tells receivers to do, spelled out with the standard library only.
    mac = hmac.new(README_SECRET.encode(), b"1767225600." + README_BODY, hashlib.sha256).hexdigest()
    assert README_SIGNATURE.endswith(mac)
    text = README.read_text()
    assert README_SIGNATURE in text and README_BODY.decode() in text and README_SECRET in text


def test_receivers_verify_fresh_signatures_only() -> None:
    now = README_TIMESTAMP + 10
    assert signing.verify(README_SECRET, README_BODY, README_SIGNATURE, now=now)
    assert not signing.verify("other", README_BODY, README_SIGNATURE, now=now)
    assert not signing.verify(README_SECRET, README_BODY + b" ", README_SIGNATURE, now=now)
    assert not signing.verify(README_SECRET, README_BODY, README_SIGNATURE, now=now + 3600)
    assert not signing.verify(README_SECRET, README_BODY, "v1=abc", now=now)
    assert not signing.verify(README_SECRET, README_BODY, None, now=now)


def test_github_documented_test_vector() -> None:
    secret, payload = "It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signing.github_signature(secret, payload) == expected
    assert signing.verify_github(secret, payload, expected)
    assert not signing.verify_github(secret, payload + b"!", expected)
    assert not signing.verify_github(secret, payload, expected.removeprefix("sha256="))
    assert not signing.verify_github(secret, payload, None)


def _no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"looked up {host}: literal addresses must not be resolved")


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "https://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://127.0.0.1/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://[fe80::1]/hook",
        "https://240.0.0.1/hook",
        "https://100.64.0.1/hook",
    ],
)
def test_non_public_addresses_are_refused_without_a_lookup(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url, allow_http=True, resolve=_no_dns)


def test_http_needs_the_setting_and_credentials_are_refused() -> None:
    with pytest.raises(UnsafeURL, match="https"):
        check_url("http://93.184.216.34/hook", resolve=_no_dns)
    assert check_url("http://93.184.216.34/hook", allow_http=True, resolve=_no_dns)
    with pytest.raises(UnsafeURL, match="credentials"):
        check_url("https://user:pw@93.184.216.34/hook", resolve=_no_dns)
    with pytest.raises(UnsafeURL):
        check_url("ftp://93.184.216.34/hook", resolve=_no_dns)


def test_names_are_checked_by_what_they_resolve_to() -> None:
    with pytest.raises(UnsafeURL, match="public"):
        check_url("https://hooks.example/x", resolve=lambda h, p: ["93.184.216.34", "10.1.2.3"])
    assert check_url("https://hooks.example/x", resolve=lambda h, p: ["93.184.216.34"])

    def gone(host: str, port: int) -> list[str]:
        raise OSError("NXDOMAIN")

    with pytest.raises(UnsafeURL, match="resolve"):
        check_url("https://hooks.example/x", resolve=gone)


def test_the_allow_list_admits_networks_and_hosts() -> None:
    allow = AllowList.parse("127.0.0.1, 10.20.0.0/16, hooks.internal, [::1]")
    assert check_url("http://127.0.0.1:9/x", allow_http=True, allow=allow, resolve=_no_dns)
    assert check_url("https://[::1]/x", allow=allow, resolve=_no_dns)
    assert check_url("https://hooks.internal/x", allow=allow, resolve=_no_dns) == []
    assert check_url("https://h.example/x", allow=allow, resolve=lambda h, p: ["10.20.3.4"])
    with pytest.raises(UnsafeURL):
        check_url("http://127.0.0.2/x", allow_http=True, allow=allow, resolve=_no_dns)
    with pytest.raises(UnsafeURL):
        check_url("http://169.254.169.254/", allow_http=True, allow=allow, resolve=_no_dns)


def test_secret_references(tmp_path: Path) -> None:
    secret_file = tmp_path / "hook"
    secret_file.write_text("from-a-file\n")
    provider = EnvFileSecretProvider({"HOOK": "from-env"})
    assert provider.get("env:HOOK") == "from-env"
    assert provider.get(f"file:{secret_file}") == "from-a-file"
    for bad in ("env:MISSING", "file:/nonexistent/secret", "vault:x", "HOOK", "env:"):
        with pytest.raises(SecretError) as exc:
            provider.get(bad)
        assert "from-" not in str(exc.value)
    patterns = ["env:SANDBOX_WEBHOOK_SECRET_*"]
    assert ref_allowed("env:SANDBOX_WEBHOOK_SECRET_CI", patterns)
    assert not ref_allowed("env:SANDBOX_DATABASE_URL", patterns)
    assert not ref_allowed("file:/etc/shadow", patterns)


def test_callbacks_resolve_to_allowed_targets(tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(
        '[endpoints.ci]\nurl = "https://hooks.example/ci"\nsecretRef = "file:/run/secrets/ci"\n'
    )
    settings = load_settings({"SANDBOX_WEBHOOK_ENDPOINTS_FILE": str(endpoints)})
    assert resolve(settings, {"endpoint": "ci"}).url == "https://hooks.example/ci"
    with pytest.raises(CallbackError, match="no webhook endpoint"):
        resolve(settings, {"endpoint": "nope"})
    ok = {"url": "https://h.example/x", "secretRef": "env:SANDBOX_WEBHOOK_SECRET_X"}
    assert resolve(settings, ok).secret_ref == "env:SANDBOX_WEBHOOK_SECRET_X"
    with pytest.raises(CallbackError, match="secretRef"):
        resolve(settings, {"url": "https://h.example/x", "secretRef": "env:SANDBOX_DATABASE_URL"})
    endpoints.write_text('[endpoints.bad]\nurl = "https://x"\n')
    with pytest.raises(CallbackError):
        load_endpoints(endpoints)


def test_oidc_rules_files(tmp_path: Path) -> None:
    toml = tmp_path / "rules.toml"
    toml.write_text(
        '[[rule]]\nrepository = "octo/*"\nref = "refs/heads/main"\nroles = ["Runs.Read"]\n'
    )
    (rule,) = load_rules(toml)
    assert rule.matches({"repository": "octo/app", "ref": "refs/heads/main"})
    assert not rule.matches({"repository": "octo/app", "ref": "refs/heads/dev"})
    assert not rule.matches({"repository": "evil/app", "ref": "refs/heads/main"})
    assert rule.roles == ("Runs.Read",)
    as_json = tmp_path / "rules.json"
    as_json.write_text('{"rule": [{"repository": "octo/app", "environment": "prod"}]}')
    (rule,) = load_rules(as_json)
    assert not rule.matches({"repository": "octo/app"})  # a named claim must be present
    toml.write_text('[[rule]]\nref = "refs/heads/main"\n')
    with pytest.raises(ConfigError):
        load_rules(toml)
    toml.write_text('[[rule]]\nrepository = "a/b"\nroles = ["Admin"]\n')
    with pytest.raises(ConfigError):
        load_rules(toml)
