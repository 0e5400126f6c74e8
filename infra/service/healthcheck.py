"""Container health check for every role of the service image (Docker HEALTHCHECK, k8s probes).

Usage: healthcheck.py [--liveness] [--node=NAME@HOST] [api|worker|beat|flower]

Without a role it reads PID 1's command line (the container's service) and decides. When PID 1 is
not the service (a container sharing the host's PID namespace), pass the role, and for a worker
its node name (``--node=executor@%h``):

- api (gunicorn): GET /healthz on the bound port, through urllib (no curl in the image).
- worker (``celery ... worker -n NAME``): a Celery ``ping`` addressed to this node only. It goes
  through the broker, so it proves the main process still consumes its control queue, which is
  the failure a hung worker shows. It is lighter than ``celery -A services.X.worker inspect ping``:
  it builds a bare Celery app from the broker URL instead of importing the worker module.
  With ``--liveness`` (Kubernetes livenessProbe) a broker that cannot be reached counts as healthy:
  restarting every worker during a broker outage would only kill running tasks, and the workers
  reconnect on their own.
- flower: GET /healthcheck on its port.
- beat: the broker answers (beat's only job is publishing to it); with ``--liveness`` always
  healthy while it runs, for the same reason as the workers.

Exit 0 healthy, 1 unhealthy; one line on stdout says why.
"""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path

TIMEOUT_S = 10.0


def _cmdline() -> list[str]:
    raw = Path("/proc/1/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


def _option(argv: list[str], *names: str) -> str | None:
    """Return the value of ``-x V``, ``--xx V`` or ``--xx=V`` in ``argv``."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _role(argv: list[str]) -> str:
    words = [Path(arg).name for arg in argv]
    if any(w.startswith("gunicorn") for w in words):
        return "api"
    if "celery" in words or any(w.endswith("celery") for w in words):
        for role in ("worker", "beat", "flower"):
            if role in argv:
                return role
    raise SystemExit(f"unhealthy: cannot tell the role from PID 1: {' '.join(argv)[:200]}")


def _http(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except Exception as exc:
        print(f"unhealthy: GET {url}: {type(exc).__name__}: {exc}")
        return 1
    print(f"healthy: GET {url} -> {status}")
    return 0 if status == 200 else 1


def check_api(argv: list[str]) -> int:
    bind = _option(argv, "-b", "--bind") or "127.0.0.1:8000"
    host, _, port = bind.rpartition(":")
    if host in {"", "0.0.0.0", "[::]", "::"}:
        host = "127.0.0.1"
    return _http(f"http://{host}:{port}/healthz")


def check_flower(argv: list[str]) -> int:
    port = _option(argv, "--port") or "5555"
    address = _option(argv, "--address") or "127.0.0.1"
    if address in {"", "0.0.0.0", "::"}:
        address = "127.0.0.1"
    return _http(f"http://{address}:{port}/healthcheck")


def _broker_url() -> str:
    from shared.config import load_settings

    return load_settings().broker_url


def check_beat(_: list[str], liveness: bool) -> int:
    from kombu import Connection

    try:
        with Connection(_broker_url(), connect_timeout=TIMEOUT_S) as conn:
            conn.ensure_connection(max_retries=1, timeout=TIMEOUT_S)
    except Exception as exc:
        # Restarting beat does not bring the broker back (see the worker check).
        print(f"{'healthy' if liveness else 'unhealthy'}: broker unreachable: {type(exc).__name__}")
        return 0 if liveness else 1
    print("healthy: broker reachable")
    return 0


def check_worker(argv: list[str], liveness: bool, node_name: str | None = None) -> int:
    from celery import Celery

    name = node_name or _option(argv, "-n", "--hostname") or "celery@%h"
    node = name.replace("%h", socket.gethostname()).replace("%n", socket.gethostname())
    app = Celery("healthcheck", broker=_broker_url())
    app.conf.broker_connection_timeout = TIMEOUT_S
    app.conf.broker_connection_retry = False
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=TIMEOUT_S)
    except Exception as exc:
        print(f"{'healthy' if liveness else 'unhealthy'}: broker unreachable: {type(exc).__name__}")
        return 0 if liveness else 1
    replies = app.control.ping(destination=[node], timeout=5.0)
    if any(node in reply for reply in replies):
        print(f"healthy: {node} answered ping")
        return 0
    print(f"unhealthy: {node} did not answer ping within 5 s")
    return 1


def main(args: list[str]) -> int:
    liveness = "--liveness" in args
    node = _option(args, "--node")
    roles = [a for a in args if not a.startswith("--")]
    argv = _cmdline()
    role = roles[0] if roles else _role(argv)
    if role == "api":
        return check_api(argv)
    if role == "worker":
        return check_worker(argv, liveness, node)
    if role == "flower":
        return check_flower(argv)
    if role == "beat":
        return check_beat(argv, liveness)
    print(f"unhealthy: unknown role {role!r}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
