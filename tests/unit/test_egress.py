"""The egress proxy's decisions and the policy switch that turns egress on (no I/O)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from shared.backends.egress import MAX_RECORDED, EgressAttachment, collect, plan_network
from shared.config import ConfigError, load_settings
from shared.egress_proxy import AllowList, Proxy, normalise_host, parse_authority, parse_request
from shared.errors import PolicyViolation
from shared.policy import DEFAULTS, Policy, Resources, check_override, load_policy, merge
from shared.redaction import Redactor

PERSONA = "6f1c1c1e-8a4b-4a36-9a51-1f0c2b7d9e10"


def allow(text: str) -> AllowList:
    return AllowList.parse(text)


# --- matching ---------------------------------------------------------------------------------


def test_a_bare_host_allows_every_port_and_a_host_port_only_that_port() -> None:
    rules = allow("api.example.com, files.example.com:443")
    assert rules.allows("api.example.com", 443) and rules.allows("api.example.com", 8080)
    assert rules.allows("files.example.com", 443)
    assert not rules.allows("files.example.com", 80)
    assert not rules.allows("other.example.com", 443)


def test_names_match_whatever_their_case_and_a_trailing_dot() -> None:
    rules = allow("API.Example.COM:443")
    assert rules.entries() == ["api.example.com:443"]
    assert rules.allows("api.example.com", 443)
    assert rules.allows("Api.EXAMPLE.com.", 443)


def test_names_match_exactly_never_by_suffix_or_prefix() -> None:
    rules = allow("example.com")
    for host in ("sub.example.com", "example.com.evil.test", "evil-example.com", "example.co"):
        assert not rules.allows(host, 443), host


def test_an_ip_literal_matches_only_the_same_address_listed_as_an_address() -> None:
    rules = allow("10.1.2.3:8080, api.internal, [2001:db8::1]:443")
    assert rules.allows("10.1.2.3", 8080)
    assert not rules.allows("10.1.2.3", 8081)
    assert not rules.allows("10.1.2.4", 8080)
    # The name's address is not listed, whatever it resolves to.
    assert not rules.allows("192.0.2.10", 443)
    # IPv6 in any spelling, bracketed as in a URI or CONNECT line.
    assert rules.allows("[2001:db8:0:0::1]", 443)
    assert rules.allows("2001:DB8::1", 443)
    assert not rules.allows("[2001:db8::2]", 443)


def test_spellings_the_resolver_would_read_as_addresses_are_not_names() -> None:
    # inet_aton reads these as 127.0.0.1; they are never a listed name, and never allowed.
    for host in ("127.1", "0x7f.1", "2130706433", "0177.0.0.1"):
        assert normalise_host(host) is None, host
    assert not allow("127.0.0.1").allows("127.1", 80)


def test_an_empty_list_denies_everything() -> None:
    rules = allow("")
    assert rules.entries() == []
    assert not rules.allows("example.com", 443)


@pytest.mark.parametrize(
    "entry", ["http://example.com", "example.com:0", "example.com:99999", "exa mple.com", "a..b"]
)
def test_a_malformed_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="not a host or host:port"):
        allow(entry)


def test_parse_authority() -> None:
    assert parse_authority("Example.com:443") == ("example.com", 443)
    assert parse_authority("[::1]:8443") == ("::1", 8443)
    assert parse_authority("example.com") is None
    assert parse_authority("example.com", default_port=80) == ("example.com", 80)
    assert parse_authority("example.com:") is None
    assert parse_authority("[::1]x:80") is None


# --- request forms ----------------------------------------------------------------------------


def test_connect_names_host_and_port() -> None:
    target = parse_request(b"CONNECT API.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (target.method, target.host, target.port, target.error) == (
        "CONNECT",
        "api.example.com",
        443,
        None,
    )
    assert parse_request(b"CONNECT api.example.com HTTP/1.1\r\n\r\n").error


def test_an_absolute_uri_is_rewritten_for_the_origin_server() -> None:
    head = (
        b"POST http://api.example.com:8080/v1/x?q=1 HTTP/1.1\r\nHost: api.example.com:8080\r\n"
        b"Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n"
        b"Connection: keep-alive, X-Trace\r\nX-Trace: 1\r\nContent-Length: 2\r\n\r\n"
    )
    target = parse_request(head)
    assert (target.method, target.host, target.port) == ("POST", "api.example.com", 8080)
    lines = target.head.decode().split("\r\n")
    assert lines[0] == "POST /v1/x?q=1 HTTP/1.1"
    assert "Host: api.example.com:8080" in lines and "Content-Length: 2" in lines
    assert "Connection: close" in lines
    assert not any(
        line.lower().startswith(("proxy-", "x-trace", "connection: k")) for line in lines
    )


def test_an_absolute_uri_defaults_to_port_80_and_gets_a_host_header() -> None:
    target = parse_request(b"GET http://example.com HTTP/1.0\r\n\r\n")
    assert (target.host, target.port) == ("example.com", 80)
    assert target.head.startswith(b"GET / HTTP/1.0\r\nHost: example.com\r\n")


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",  # origin form: not a proxy request
        b"GET https://example.com/ HTTP/1.1\r\n\r\n",  # TLS goes through CONNECT
        b"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
        b"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n",
        b"GET http://example.com:99999/ HTTP/1.1\r\n\r\n",
        b"garbage\r\n\r\n",
    ],
)
def test_other_request_forms_are_refused(head: bytes) -> None:
    assert parse_request(head).error


def test_every_decision_is_one_json_line_with_running_totals() -> None:
    out = io.StringIO()
    proxy = Proxy(allow("example.com:443"), out)
    assert proxy.decide(parse_request(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"))
    assert not proxy.decide(parse_request(b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n"))
    assert not proxy.decide(parse_request(b"GET http://example.com/ HTTP/1.1\r\n\r\n"))
    assert not proxy.decide(parse_request(b"GET / HTTP/1.1\r\n\r\n"))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["decision"], x["host"], x["port"]) for x in lines] == [
        ("allow", "example.com", 443),
        ("deny", "evil.test", 443),
        ("deny", "example.com", 80),
        ("deny", "/", None),
    ]
    assert lines[-1]["reason"] and (lines[-1]["denied"], lines[-1]["allowed"]) == (3, 1)
    assert all(x["time"].endswith("Z") for x in lines)


# --- policy, settings, plan -------------------------------------------------------------------


def test_egress_is_off_unless_the_policy_turns_it_on() -> None:
    assert DEFAULTS.egress is False
    policy = merge(Policy(), [(None, "test.egress", {"egress": True})])
    assert policy.resolve(PERSONA, "test.egress").egress is True
    assert policy.resolve(PERSONA, "test.run").egress is False
    # A persona row can turn it off again for one persona.
    policy = merge(policy, [(PERSONA, "test.egress", {"egress": False})])
    assert policy.resolve(PERSONA, "test.egress").egress is False


def test_a_request_cannot_turn_egress_on() -> None:
    with pytest.raises(PolicyViolation, match="set by the policy only"):
        Policy().resolve(PERSONA, "test.run", {"egress": True})


def test_egress_must_be_a_boolean() -> None:
    check_override({"egress": True, "cpu": 1}, "row")
    with pytest.raises(PolicyViolation, match="true or false"):
        check_override({"egress": 1}, "row")


def test_the_policy_file_may_turn_egress_on(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[methods."test.*"]\negress = true\n')
    assert load_policy(path).resolve(PERSONA, "test.x").egress is True


def test_resources_show_egress_only_when_granted() -> None:
    assert "egress" not in DEFAULTS.to_json()
    granted = Resources(1.0, 256, 10, egress=True)
    assert granted.to_json()["egress"] is True
    assert Resources.from_json(granted.to_json()) == granted
    assert Resources.from_json(DEFAULTS.to_json()).egress is False


def test_the_allow_list_setting_is_checked_at_start() -> None:
    settings = load_settings({"SANDBOX_EGRESS_ALLOW_HOSTS": "a.example, b.example:443"})
    assert settings.egress_allow_hosts == "a.example, b.example:443"
    assert load_settings({}).egress_network == "bridge"
    with pytest.raises(ConfigError, match="SANDBOX_EGRESS_ALLOW_HOSTS"):
        load_settings({"SANDBOX_EGRESS_ALLOW_HOSTS": "https://a.example"})


def test_the_plan_says_none_or_egress_with_the_allow_list() -> None:
    assert plan_network(DEFAULTS, "a.example") == {"network": "none"}
    granted = Resources(1.0, 256, 10, egress=True)
    assert plan_network(granted, "A.example, b.example:443") == {
        "network": "egress",
        "egressAllowHosts": ["a.example", "b.example:443"],
    }
    assert plan_network(granted, "") == {"network": "egress", "egressAllowHosts": []}


def test_the_run_container_gets_the_proxy_by_address_and_no_resolver() -> None:
    attachment = EgressAttachment("sandbox-x-1-net", "172.30.0.2")
    assert attachment.environment == {
        "HTTP_PROXY": "http://172.30.0.2:3128",
        "HTTPS_PROXY": "http://172.30.0.2:3128",
        "http_proxy": "http://172.30.0.2:3128",
        "https_proxy": "http://172.30.0.2:3128",
    }
    options = attachment.container_options()
    assert options["network"] == "sandbox-x-1-net" and options["dns"] == ["172.30.0.2"]
    assert "network_mode" not in options


class _FakeProxy:
    """What ``collect`` asks of the proxy container: stop it, then read its log."""

    def __init__(self, log: bytes) -> None:
        self.log, self.stopped = log, False

    def stop(self, timeout: int) -> None:
        self.stopped = True

    def logs(
        self, stdout: bool, stderr: bool, stream: bool = False, tail: int | None = None
    ) -> Any:
        assert self.stopped, "the log is read only once the proxy stopped"
        if tail is not None:
            return b"".join(self.log.splitlines(keepends=True)[-tail:])
        # Frames need not end at line ends.
        return iter([self.log[i : i + 7] for i in range(0, len(self.log), 7)])


class _FakeClient:
    def __init__(self, proxy: _FakeProxy) -> None:
        self.containers = self
        self.proxy = proxy

    def get(self, name: str) -> _FakeProxy:
        assert name == "sandbox-r-1-egress"
        return self.proxy


def _decision_log(denied: int, host: str = "h{i}.evil.test") -> bytes:
    out = io.StringIO()
    proxy = Proxy(allow("ok.example"), out)
    proxy.log({"event": "listening", "port": 3128})
    for i in range(denied):
        line = f"CONNECT {host.format(i=i)}:443 HTTP/1.1\r\n\r\n"
        proxy.decide(parse_request(line.encode()))
        proxy.decide(parse_request(b"GET http://ok.example/ HTTP/1.1\r\n\r\n"))
    return out.getvalue().encode() + b"not json\n"


def test_collect_records_the_refusals_and_the_totals() -> None:
    plan = {"network": "egress", "egressAllowHosts": ["ok.example"]}
    client = _FakeClient(_FakeProxy(_decision_log(3)))
    got = collect(client, plan, "r", 1, lambda v: v)  # type: ignore[arg-type]
    assert got is not None
    assert [(d["host"], d["port"], d["method"]) for d in got["denied"]] == [
        (f"h{i}.evil.test", 443, "CONNECT") for i in range(3)
    ]
    assert (got["deniedTotal"], got["allowedTotal"]) == (3, 3)
    assert collect(client, {"network": "none"}, "r", 1, lambda v: v) is None  # type: ignore[arg-type]


def test_collect_keeps_the_first_refusals_and_counts_them_all() -> None:
    plan = {"network": "egress", "egressAllowHosts": []}
    client = _FakeClient(_FakeProxy(_decision_log(MAX_RECORDED + 50)))
    got = collect(client, plan, "r", 1, lambda v: v)  # type: ignore[arg-type]
    assert got is not None and len(got["denied"]) == MAX_RECORDED
    assert got["denied"][-1]["host"] == f"h{MAX_RECORDED - 1}.evil.test"
    assert (got["deniedTotal"], got["allowedTotal"]) == (MAX_RECORDED + 50, MAX_RECORDED + 50)


def test_collect_redacts_what_it_records() -> None:
    plan = {"network": "egress", "egressAllowHosts": []}
    # A secret spelt into a host name, the way DNS exfiltration would carry it.
    secret = "per-run-value-7f3a9c"
    client = _FakeClient(_FakeProxy(_decision_log(1, host=f"{secret}.exfil.test")))
    redact = Redactor(secrets=(secret,)).redact_value
    got = collect(client, plan, "r", 1, redact)  # type: ignore[arg-type]
    assert got is not None and secret not in json.dumps(got)
    assert got["denied"][0]["host"].endswith(".exfil.test")
