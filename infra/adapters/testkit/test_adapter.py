"""Test adapter: misbehaves on request so the runner's limits and parsing can be exercised.

Serves ``test.run`` and every other ``test.*`` method id. The input's ``action`` selects the
behaviour: echo, exit, sleep, oom, spam, pii, bad_evaluation, no_evaluation, env.
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


ACTIONS: dict[str, Callable[[dict], dict]] = {
    "echo": action_echo,
    "exit": action_exit,
    "sleep": action_sleep,
    "oom": action_oom,
    "spam": action_spam,
    "tick": action_tick,
    "pii": action_pii,
    "bad_evaluation": action_bad_evaluation,
    "no_evaluation": action_no_evaluation,
    "env": action_env,
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
