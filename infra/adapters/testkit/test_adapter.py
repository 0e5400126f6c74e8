"""Test adapter: misbehaves on request so the runner's limits and parsing can be exercised.

Serves ``test.run`` and every other ``test.*`` method id. The input's ``action`` selects the
behaviour: echo, exit, sleep, oom, spam, pii, bad_evaluation, no_evaluation, env; and hostile
ones that try to escape and report what they got: probe, fork_bomb, cpu_spin, fill_tmp,
write_root, become_root, read_host, docker_socket, connect, dns, print_forever; and fetch, which
tries the network of a run allowed egress (through its proxy, around it, and DNS).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

try:  # inside the image the SDK sits next to this file on PYTHONPATH
    import adapter_sdk
except ImportError:  # in the repo it lives in shared/
    from shared import adapter_sdk

BadInput = adapter_sdk.BadInput
CHUNK = 16 * 1024 * 1024
PAGE = 4096


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _number(data: dict, key: str, default: Any = None, minimum: float = 0) -> Any:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise BadInput(f"'{key}' must be a number >= {minimum}")
    return value


def _str_list(data: dict, key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"'{key}' must be a list of strings")
    return value


def action_echo(data: dict) -> dict:
    for line in _str_list(data, "stdout"):
        print(line, flush=True)
    for line in _str_list(data, "stderr"):
        _log(line)
    return {"echo": data.get("value")}


def action_exit(data: dict) -> dict:
    code = data.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        raise BadInput("'code' must be an integer")
    if data.get("message") is not None:
        _log(str(data["message"]))
    # os._exit would skip flushing; sys.exit propagates through the SDK untouched.
    sys.stdout.flush()
    sys.exit(code)


def action_sleep(data: dict) -> dict:
    seconds = _number(data, "seconds")
    deadline = time.monotonic() + seconds
    tick = 0
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        tick += 1
        print(f"sleep: {tick}s elapsed", flush=True)
    return {"slept": seconds}


def action_oom(data: dict) -> dict:
    megabytes = int(_number(data, "megabytes", 4096, minimum=1))
    held: list[bytearray] = []
    allocated = 0
    while allocated < megabytes:
        size = min(CHUNK, (megabytes - allocated) * 1024 * 1024)
        chunk = bytearray(size)
        # Writing one byte per page forces the kernel to really back the memory (and charge
        # it to the cgroup); bytearray() alone may be satisfied by untouched zero pages.
        for i in range(0, size, PAGE):
            chunk[i] = 1
        held.append(chunk)
        allocated += size // (1024 * 1024)
        print(f"oom: allocated {allocated} MiB", flush=True)
    return {"allocatedMegabytes": allocated}


def action_spam(data: dict) -> dict:
    lines = int(_number(data, "lines"))
    width = int(_number(data, "width", 80, minimum=1))
    out = sys.stdout
    for i in range(lines):
        prefix = f"{i:08d} "
        out.write((prefix + "x" * width)[:width] + "\n")
    out.flush()
    return {"lines": lines, "width": width}


def action_pii(data: dict) -> dict:
    # All values are well-known fakes/test fixtures; they exist to exercise log redaction.
    print("user contact: jane.doe@example.com, phone +1 (555) 010-4477", flush=True)
    print("charging card 4111 1111 1111 1111 exp 12/30", flush=True)
    print("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", flush=True)
    _log("db connect with password=hunter2")
    _log("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl")
    return {"contact": "jane.doe@example.com", "card": "4111 1111 1111 1111", "ok": True}


# Fake secrets and PII in the formats the redactor knows (public test fixtures or made up). The
# end-to-end redaction test checks that none of the SECRET parts survive anywhere.
CATALOGUE: list[tuple[str, str]] = [
    ("email", "contact maria.gonzalez@example.org for access"),
    ("phone", "call +44 20 7946 0958 after six"),
    ("card", "card on file 5555 5555 5555 4444"),
    ("iban", "pay to GB82 WEST 1234 5698 7654 32"),
    ("ssn", "applicant ssn 219-09-9999"),
    ("aws_access_key_id", "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE"),
    ("aws_secret_access_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("github_token", "GITHUB_TOKEN=ghp_1A2b3C4d5E6f7G8h9I0j1K2l3M4n5O6p7Q8r"),
    ("slack_token", "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("stripe_key", "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("google_api_key", "maps key AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"),
    (
        "jwt",
        "session eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ),
    ("bearer", "Authorization: Bearer 0b79bab50daca910b000d4f1a2b675d604257e42"),
    ("url_password", "postgres://app:Tr0ub4dor&3@db.internal:5432/app"),
    ("secret_assignment", "DB_PASSWORD=correct-horse-battery-staple"),
    (
        "azure_storage_key",
        "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey="
        "c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmV0a2V5MTIzNA==;"
        "EndpointSuffix=core.windows.net",
    ),
]
PEM_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\n"
    "-----END RSA PRIVATE KEY-----"
)
RUNTIME_MASK = "per-run-value-7f3a9c"


def action_catalogue(data: dict) -> dict:
    for _, line in CATALOGUE:
        print(line, flush=True)
    print(PEM_KEY, flush=True)
    # A secret split across two writes (the reader sees two chunks).
    sys.stdout.write("late token ghp_ZYXWVUTSRQPONMLKJ")
    sys.stdout.flush()
    time.sleep(0.2)
    sys.stdout.write("IHGFEDCBA0987654321\n")
    sys.stdout.flush()
    for _, line in CATALOGUE[:6]:
        _log("error: " + line)
    print(f"::add-mask::{RUNTIME_MASK}", flush=True)
    print(f"derived value {RUNTIME_MASK} computed", flush=True)
    # Not on stderr: stdout and stderr are separate pipes and the engine may read a stderr line
    # before an earlier stdout one, so a mask covers what the platform reads after it (README).
    return {"found": [line for _, line in CATALOGUE[:8]], "mask": RUNTIME_MASK}


def action_bad_evaluation(data: dict) -> dict:
    print(adapter_sdk.EVALUATION_MARKER + "{not json", flush=True)
    sys.exit(0)


def action_no_evaluation(data: dict) -> dict:
    print("finished without an evaluation", flush=True)
    sys.exit(0)


def _can_write(directory: str) -> bool:
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _network_usable() -> bool:
    # Loopback discard port only: we test whether networking exists at all, never reach out.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(("127.0.0.1", 9))
            return True
    except ConnectionRefusedError:
        return True  # the stack answered (RST), so a network namespace with lo exists
    except OSError:
        return False


def _interfaces() -> list[str]:
    # The loopback probe cannot tell --network none from a bridge; the interface list can.
    try:
        return sorted(n for n in os.listdir("/sys/class/net") if n != "lo")
    except OSError:
        return []


def action_tick(data: dict) -> dict:
    # Each line carries the wall-clock time it was printed, for log latency benchmarks.
    count = int(_number(data, "count", 50, minimum=1))
    interval = _number(data, "intervalMs", 100, minimum=0) / 1000.0
    for i in range(count):
        print(f"tick {i} {time.time():.6f}", flush=True)
        time.sleep(interval)
    return {"ticks": count}


def action_env(data: dict) -> dict:
    try:
        with open("/x", "w"):
            pass
        os.unlink("/x")
        read_only_root = False
    except OSError:
        read_only_root = True
    return {
        "runId": os.environ.get("SANDBOX_RUN_ID"),
        "methodId": os.environ.get("SANDBOX_METHOD_ID"),
        "attempt": os.environ.get("SANDBOX_ATTEMPT"),
        "inputPath": os.environ.get("SANDBOX_INPUT_PATH", adapter_sdk.DEFAULT_INPUT_PATH),
        "uid": os.getuid(),
        "readOnlyRoot": read_only_root,
        "tmpWritable": _can_write("/tmp"),
        "network": _network_usable(),
        "interfaces": _interfaces(),
    }


# Hostile actions (issue 6): each tries to break out and reports what it got, so a test can
# assert the sandbox held. None of them reaches beyond 127.0.0.1 inside the container.


def _status_fields() -> dict[str, str]:
    fields = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in {
                    "CapInh",
                    "CapPrm",
                    "CapEff",
                    "CapBnd",
                    "CapAmb",
                    "NoNewPrivs",
                    "Seccomp",
                    "Uid",
                    "Gid",
                }:
                    fields[key] = value.strip()
    except OSError:
        pass
    return fields


def action_probe(data: dict) -> dict:
    try:
        mounts = open("/proc/self/mounts").read().splitlines()
    except OSError:
        mounts = []
    try:
        import resource

        nofile = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    except (ImportError, OSError):
        nofile = []
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "status": _status_fields(),
        "nofile": nofile,
        "mounts": [" ".join(m.split()[:4]) for m in mounts],
        "variant": os.environ.get("SANDBOX_TEST_VARIANT"),
        "outWritable": _can_write("/sandbox/out"),
        "tmpWritable": _can_write("/tmp"),
        "interfaces": _interfaces(),
    }


def action_fork_bomb(data: dict) -> dict:
    children: list[int] = []
    error = None
    limit = int(_number(data, "max", 5000, minimum=1))
    try:
        while len(children) < limit:
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
    except OSError as exc:
        error = exc.__class__.__name__
    for pid in children:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
    return {"forked": len(children), "error": error}


def action_cpu_spin(data: dict) -> dict:
    print("spinning", flush=True)
    while True:
        pass


def action_fill_tmp(data: dict) -> dict:
    path = data.get("path", "/tmp")
    if path not in ("/tmp", "/sandbox/out"):
        raise BadInput("'path' must be /tmp or /sandbox/out")
    written, error = 0, None
    block = b"x" * (1024 * 1024)
    try:
        with open(os.path.join(path, "fill"), "wb") as f:
            while written < 1024 * 1024 * 1024:
                f.write(block)
                f.flush()
                written += len(block)
    except OSError as exc:
        error = exc.__class__.__name__ + ":" + str(exc.errno)
    return {"writtenBytes": written, "error": error}


def action_write_root(data: dict) -> dict:
    results = {}
    for path in ("/x", "/etc/passwd", "/opt/adapter/test_adapter.py", "/sandbox/input/x"):
        try:
            with open(path, "a") as f:
                f.write("pwned\n")
            results[path] = "written"
        except OSError as exc:
            results[path] = exc.__class__.__name__
    return {"results": results}


def action_become_root(data: dict) -> dict:
    import subprocess

    attempts: dict[str, str] = {}
    for name, fn in (
        ("setuid", lambda: os.setuid(0)),
        ("setgid", lambda: os.setgid(0)),
        ("chroot", lambda: os.chroot("/tmp")),
    ):
        try:
            fn()
            attempts[name] = "succeeded"
        except OSError as exc:
            attempts[name] = exc.__class__.__name__
    setuid_binaries = []
    for directory in ("/bin", "/usr/bin", "/sbin", "/usr/sbin"):
        try:
            for entry in os.scandir(directory):
                try:
                    if entry.is_file() and entry.stat().st_mode & 0o4000:
                        setuid_binaries.append(entry.path)
                except OSError:
                    pass
        except OSError:
            pass
    for command in (["su", "-c", "id -u", "root"], ["sudo", "-n", "id", "-u"]):
        try:
            done = subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, timeout=5, check=False
            )
            attempts[command[0]] = f"exit {done.returncode} out {done.stdout.decode().strip()!r}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            attempts[command[0]] = exc.__class__.__name__
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "attempts": attempts,
        "setuidBinaries": sorted(setuid_binaries),
        "status": _status_fields(),
    }


def action_read_host(data: dict) -> dict:
    results: dict[str, str] = {}
    for path in (
        "/etc/shadow",
        "/proc/1/environ",
        "/proc/kcore",
        "/sys/kernel/security",
        "/host/etc/shadow",
        "/var/run/docker.sock",
    ):
        try:
            with open(path, "rb") as f:
                content = f.read(65536)
            results[path] = "read"
            if path == "/proc/1/environ":
                names = sorted(v.split(b"=", 1)[0].decode() for v in content.split(b"\0") if v)
                results["environNames"] = ",".join(names)
        except OSError as exc:
            results[path] = exc.__class__.__name__
    return {"results": results}


def action_docker_socket(data: dict) -> dict:
    results = {}
    for path in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock"):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                s.connect(path)
                s.sendall(b"GET /version HTTP/1.0\r\n\r\n")
                results[path] = "connected: " + s.recv(64).decode(errors="replace")
        except OSError as exc:
            results[path] = exc.__class__.__name__
    return {"results": results}


def action_connect(data: dict) -> dict:
    # Only 127.0.0.1: the test listens there on the host; under network none it is unreachable.
    port = int(_number(data, "port", 1, minimum=1))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
            s.sendall(b"exfiltrated\n")
            return {"connected": True}
    except OSError as exc:
        return {"connected": False, "error": exc.__class__.__name__}


def action_dns(data: dict) -> dict:
    # Only tried when the container has no interface but lo (so no query can leave it).
    if _interfaces():
        return {"attempted": False, "interfaces": _interfaces()}
    results = {}
    for name in ("secret-data.exfil.invalid", "localhost.localdomain.invalid"):
        try:
            results[name] = str(socket.getaddrinfo(name, 53)[0][4])
        except OSError as exc:
            results[name] = exc.__class__.__name__
    return {"attempted": True, "results": results}


def _gateway() -> str | None:
    # From the routing table, not DNS: the default gateway of the container's network.
    try:
        with open("/proc/net/route") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) > 2 and fields[1] == "00000000":
                    return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    except (OSError, ValueError):
        pass
    return None


def _tcp(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=2.0) as s:
            s.sendall(b"exfiltrated\n")
            return "connected"
    except OSError as exc:
        return exc.__class__.__name__


def action_fetch(data: dict) -> dict:
    # Egress runs only (issue 6). Every target comes from the input: the test passes its own
    # containers and listeners on this machine, never an outside address.
    import http.client
    import urllib.error
    import urllib.request

    proxy = os.environ.get("HTTP_PROXY", "")
    got: dict[str, Any] = {"proxy": proxy, "interfaces": _interfaces(), "gateway": _gateway()}
    urls: dict[str, Any] = {}
    for url in _str_list(data, "urls"):
        try:  # urllib sends the absolute URI to $HTTP_PROXY
            with urllib.request.urlopen(url, timeout=5) as response:
                urls[url] = {"status": response.status, "body": response.read(200).decode()}
        except urllib.error.HTTPError as exc:
            urls[url] = {"status": exc.code}
        except OSError as exc:
            urls[url] = {"error": exc.__class__.__name__}
    got["urls"] = urls
    tunnels: dict[str, Any] = {}
    proxy_host, _, proxy_port = proxy.removeprefix("http://").partition(":")
    for target in _str_list(data, "tunnels"):  # CONNECT host:port, then HTTP inside
        host, _, port = target.rpartition(":")
        conn = http.client.HTTPConnection(proxy_host, int(proxy_port or 3128), timeout=5)
        try:
            conn.set_tunnel(host, int(port))
            conn.request("GET", "/")
            response = conn.getresponse()
            tunnels[target] = {"status": response.status, "body": response.read(200).decode()}
        except OSError as exc:
            tunnels[target] = {"error": exc.__class__.__name__, "detail": str(exc)[:100]}
        finally:
            conn.close()
    got["tunnels"] = tunnels
    got["direct"] = {
        target: _tcp(target.rpartition(":")[0], int(target.rpartition(":")[2]))
        for target in _str_list(data, "direct")
    }
    gateway = got["gateway"]
    got["gatewayPorts"] = {
        str(port): _tcp(gateway, int(port)) if gateway else "no gateway"
        for port in data.get("gatewayPorts", [])
    }
    resolved: dict[str, str] = {}
    for name in _str_list(data, "resolve"):
        try:
            resolved[name] = str(socket.getaddrinfo(name, 80)[0][4])
        except OSError as exc:
            resolved[name] = exc.__class__.__name__
    got["resolve"] = resolved
    return got


def action_print_forever(data: dict) -> dict:
    line = "y" * 1000 + "\n"
    out = sys.stdout
    while True:
        out.write(line)


ACTIONS: dict[str, Callable[[dict], dict]] = {
    "echo": action_echo,
    "exit": action_exit,
    "sleep": action_sleep,
    "oom": action_oom,
    "spam": action_spam,
    "tick": action_tick,
    "pii": action_pii,
    "catalogue": action_catalogue,
    "bad_evaluation": action_bad_evaluation,
    "no_evaluation": action_no_evaluation,
    "env": action_env,
    "probe": action_probe,
    "fork_bomb": action_fork_bomb,
    "cpu_spin": action_cpu_spin,
    "fill_tmp": action_fill_tmp,
    "write_root": action_write_root,
    "become_root": action_become_root,
    "read_host": action_read_host,
    "docker_socket": action_docker_socket,
    "connect": action_connect,
    "dns": action_dns,
    "fetch": action_fetch,
    "print_forever": action_print_forever,
}


@adapter_sdk.method("test.run")
@adapter_sdk.method("test.*")
def run(data: dict) -> dict:
    action = data.get("action")
    fn = ACTIONS.get(action) if isinstance(action, str) else None
    if fn is None:
        raise BadInput(f"unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}")
    _log(f"test adapter: action={action} method={os.environ.get('SANDBOX_METHOD_ID')}")
    return fn(data)


if __name__ == "__main__":
    adapter_sdk.main()
