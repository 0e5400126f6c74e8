"""Median time from POST to terminal status for a trivial run, next to a plain ``docker run --rm``.

Needs the fleet from ``make up`` (api on 127.0.0.1:8000). Prints a Markdown table; the ratio is the
result (absolute times on a shared 2-core machine are noisy).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import requests

from shared.auth import issue_token
from shared.config import load_settings
from shared.states import TERMINAL

IMAGE = "localhost:5000/test-adapter:dev"
BODY = {
    "personaId": "6f1c2a57-3b0e-4c55-9a51-0f4d7f1d2b11",
    "methodId": "test.run",
    "adapterImage": IMAGE,
    "input": {"action": "echo", "stdout": ["hi"], "value": 1},
}


def fleet_once(api: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    run_id = requests.post(
        f"{api}/api/sandbox/runs", json=BODY, headers=headers, timeout=30
    ).json()["id"]
    while True:
        status = requests.get(
            f"{api}/api/sandbox/runs/{run_id}", headers=headers, timeout=30
        ).json()["status"]
        if status in TERMINAL:
            if status != "succeeded":
                raise SystemExit(f"run {run_id} ended {status}")
            return time.perf_counter() - start
        time.sleep(0.01)


def docker_once() -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "-e",
            "SANDBOX_METHOD_ID=test.run",
            "-e",
            "SANDBOX_INPUT_PATH=/dev/null",
            "--entrypoint",
            "python3",
            IMAGE,
            "-c",
            "print('hi')",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {issue_token(load_settings())}"}
    fleet_once(args.api, headers)  # warm up both paths
    docker_once()
    fleet, bare = [], []
    for _ in range(args.runs):  # interleaved, so both see the same machine load
        fleet.append(fleet_once(args.api, headers))
        bare.append(docker_once())
    f50, b50 = statistics.median(fleet), statistics.median(bare)
    f95 = statistics.quantiles(fleet, n=20)[-1]
    b95 = statistics.quantiles(bare, n=20)[-1]
    print(f"| figure ({args.runs} sequential runs) | fleet | docker run --rm | ratio |")
    print("|---|---|---|---|")
    print(f"| p50 POST→terminal (s) | {f50:.3f} | {b50:.3f} | {f50 / b50:.2f} |")
    print(f"| p95 POST→terminal (s) | {f95:.3f} | {b95:.3f} | {f95 / b95:.2f} |")


if __name__ == "__main__":
    main()
