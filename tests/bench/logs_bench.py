"""Log path benchmark (``make bench-logs``, needs ``make up``).

1. Latency from a line printed in the container to the line arriving at an SSE client (p50, p95),
   next to the same container's ``docker logs --follow`` as the baseline.
2. An adapter printing as fast as it can (default 1 GiB): sustained MB/s through the executor and
   the executor's peak RSS (all its processes), next to ``docker run ... > /dev/null`` of the same
   output as the baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path

import requests

from shared.auth import issue_token
from shared.config import load_settings

IMAGE = "localhost:5000/test-adapter:dev"
PERSONA = "6f1c2a57-3b0e-4c55-9a51-0f4d7f1d2b11"


def submit(
    api: str,
    headers: dict[str, str],
    body_input: dict[str, object],
    resources: dict[str, int] | None = None,
) -> str:
    body: dict[str, object] = {
        "personaId": PERSONA,
        "methodId": "test.run",
        "adapterImage": IMAGE,
        "input": body_input,
    }
    if resources:
        body["resources"] = resources
    response = requests.post(f"{api}/api/sandbox/runs", json=body, headers=headers, timeout=30)
    response.raise_for_status()
    return str(response.json()["id"])


def sse_latency(api: str, headers: dict[str, str], count: int) -> list[float]:
    run_id = submit(api, headers, {"action": "tick", "count": count, "intervalMs": 50})
    latencies = []
    with requests.get(
        f"{api}/api/sandbox/runs/{run_id}/logs",
        stream=True,
        timeout=120,
        headers={**headers, "Accept": "text/event-stream"},
    ) as response:
        for raw in response.iter_lines(decode_unicode=True):
            if raw.startswith("event: end"):
                break
            if raw.startswith("data: "):
                line = json.loads(raw[6:])["line"]
                if line.startswith("tick "):
                    latencies.append(time.time() - float(line.split()[2]))
    return latencies


def docker_logs_latency(count: int) -> list[float]:
    """The baseline: the engine's own log stream, read by the docker CLI."""
    proc = subprocess.Popen(
        [
            "docker",
            "run",
            "--rm",
            "-e",
            "SANDBOX_METHOD_ID=test.run",
            "-e",
            "SANDBOX_INPUT_PATH=/dev/stdin",
            "-i",
            IMAGE,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"action": "tick", "count": count, "intervalMs": 50}))
    proc.stdin.close()
    latencies = []
    for line in proc.stdout:
        if line.startswith("tick "):
            latencies.append(time.time() - float(line.split()[2]))
    proc.wait()
    return latencies


def executor_rss_mb() -> float:
    """Return the largest RSS among the executor's processes (its main process and pool children).

    The pool child running the flood is the one that would grow; the sum over an idle pool of
    four children is a constant that says nothing about the log path.
    """
    pid = int(Path(".run/executor.pid").read_text())
    pids = [pid] + [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout.split()
    ]
    largest = 0
    for p in pids:
        try:
            for row in Path(f"/proc/{p}/status").read_text().splitlines():
                if row.startswith("VmRSS:"):
                    largest = max(largest, int(row.split()[1]))
        except FileNotFoundError:
            pass
    return largest / 1024


def flood(api: str, headers: dict[str, str], megabytes: int) -> dict[str, float]:
    width = 1023
    lines = megabytes * 1024 * 1024 // (width + 1)
    idle = executor_rss_mb()
    peak = [idle]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(executor_rss_mb())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run_id = submit(
        api,
        headers,
        {"action": "spam", "lines": lines, "width": width},
        # Above the default 100 MB cap: a capped run stops early, and its rate is not the path's.
        {"timeoutS": 300, "logCapMb": 1024},
    )
    while True:
        run = requests.get(f"{api}/api/sandbox/runs/{run_id}", headers=headers, timeout=30).json()
        if run["status"] in {"succeeded", "failed", "timed_out", "error", "cancelled"}:
            break
        time.sleep(0.5)
    stop.set()
    sampler.join()
    stamps = run["timestamps"]
    from datetime import datetime

    seconds = (
        datetime.fromisoformat(stamps["finished"]) - datetime.fromisoformat(stamps["started"])
    ).total_seconds()
    seen = run["logs"]["streams"]["stdout"]["bytesSeen"]
    start = time.perf_counter()
    subprocess.run(
        f"echo '{json.dumps({'action': 'spam', 'lines': lines, 'width': width})}' | "
        f"docker run --rm -i -e SANDBOX_METHOD_ID=test.run -e SANDBOX_INPUT_PATH=/dev/stdin "
        f"{IMAGE} > /dev/null",
        shell=True,
        check=True,
    )
    bare = time.perf_counter() - start
    return {
        "status": run["status"],
        "mb": seen / 1e6,
        "bare_mb": lines * (width + 1) / 1e6,
        "fleet_s": seconds,
        "bare_s": bare,
        "idle_rss": idle,
        "peak_rss": max(peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--megabytes", type=int, default=1024)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {issue_token(load_settings())}"}
    ours = sse_latency(args.api, headers, args.lines)
    base = docker_logs_latency(args.lines)

    def pct(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1000

    print("| figure | fleet | baseline | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for q in (50, 95):
        f, b = pct(ours, q), pct(base, q)
        target = "≤ 250 ms" if q == 95 else ""
        met = ("yes" if f <= 250 else "no") if q == 95 else ""
        print(
            f"| p{q} print→SSE client (ms) | {f:.1f} | {b:.1f} (docker run stdout) | "
            f"{f / max(b, 0.001):.1f} | {target} | {met} |"
        )
    result = flood(args.api, headers, args.megabytes)
    # Each side's rate over the bytes it printed: the two differ when the fleet run was stopped.
    rate, bare_rate = result["mb"] / result["fleet_s"], result["bare_mb"] / result["bare_s"]
    ended = "" if result["status"] == "succeeded" else f" (run ended {result['status']})"
    print(
        f"| {args.megabytes} MiB printed: MB/s through the executor{ended} | {rate:.1f} | "
        f"{bare_rate:.1f} (docker run > /dev/null) | {rate / bare_rate:.2f} | | |"
    )
    print(
        f"| executor peak RSS (MiB), idle {result['idle_rss']:.0f} | {result['peak_rss']:.0f} | "
        f"| | < 150 MiB, flat | {'yes' if result['peak_rss'] < 150 else 'no'} |"
    )


if __name__ == "__main__":
    main()
