"""``sandbox-runner submit``: submit a run, follow its logs, wait, and report like a CI step.

Made for GitHub Actions as much as for people: when ``$GITHUB_OUTPUT`` and
``$GITHUB_STEP_SUMMARY`` exist (the Actions contract, read here and nowhere else) the command
writes the step outputs (``run-id``, ``status``, ``evaluation-path``) and a Markdown summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click
import requests

from shared.auth import issue_token
from shared.cli import main
from shared.config import load_settings
from shared.states import TERMINAL

# The step's exit code says how the run ended; 2 is "the API refused the request".
EXIT_CODES = {"succeeded": 0, "failed": 1, "timed_out": 3, "error": 4, "cancelled": 5}
EXIT_REFUSED = 2
EXIT_WAIT_TIMEOUT = 6


def build_request(
    request_file: Path | None,
    persona: str | None,
    method: str | None,
    image: str | None,
    input_file: Path | None,
    dry_run: bool | None,
) -> dict[str, Any]:
    """Return the run request: the JSON file (if any) with the flags laid over it."""
    body: dict[str, Any] = json.loads(request_file.read_text()) if request_file else {}
    if persona:
        body["personaId"] = persona
    if method:
        body["methodId"] = method
    if image:
        body["adapterImage"] = image
    if input_file:
        body["input"] = json.loads(input_file.read_text())
    if dry_run is not None:
        body["dryRun"] = dry_run
    missing = [k for k in ("personaId", "methodId", "adapterImage", "input") if k not in body]
    if missing:
        raise click.UsageError(
            f"the request lacks {', '.join(missing)}: give a JSON file or --persona/--method/"
            "--image/--input-file"
        )
    return body


def follow(
    api: str, run_id: str, headers: dict[str, str], timeout: float, show_logs: bool
) -> dict[str, Any]:
    """Poll the run (and print its new log lines to stderr) until it ends or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    after = 0
    delay = 0.2
    while True:
        if show_logs:
            after = _print_new_lines(api, run_id, headers, after)
        # Without logs to print, one long poll waits for the end; with them, a short one.
        wait = 0.0 if show_logs else max(0.0, min(30.0, deadline - time.monotonic()))
        run: dict[str, Any] = requests.get(
            f"{api}/api/sandbox/runs/{run_id}",
            params={"wait": f"{wait:.1f}"} if wait else None,
            headers=headers,
            timeout=30 + wait,
        ).json()
        if run["status"] in TERMINAL:
            if show_logs:
                _print_new_lines(api, run_id, headers, after)
            return run
        if time.monotonic() > deadline:
            return run
        if show_logs:
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)


def _print_new_lines(api: str, run_id: str, headers: dict[str, str], after: int) -> int:
    while True:
        response = requests.get(
            f"{api}/api/sandbox/runs/{run_id}/logs",
            params={"after": after, "limit": 1000},
            headers={**headers, "Accept": "application/json"},
            timeout=30,
        )
        if response.status_code != 200:
            return after
        page = response.json()
        for line in page["lines"]:
            click.echo(f"[{line['stream']}] {line['line']}", err=True)
        after = page["nextAfter"]
        if len(page["lines"]) < 1000:
            return after


def summary_markdown(run: dict[str, Any], api: str) -> str:
    """Return the step summary: outcome, reason, evaluation and a link to the run."""
    icon = {"succeeded": "✅", "failed": "❌", "timed_out": "⏱️", "cancelled": "🚫"}.get(
        run["status"], "⚠️"
    )
    lines = [
        f"### {icon} Sandbox run `{run['methodId']}`: {run['status']}",
        "",
        "| | |",
        "| --- | --- |",
        f"| run | [`{run['id']}`]({api}/api/sandbox/runs/{run['id']}) |",
        f"| image | `{run.get('adapterImage')}` |",
        f"| reason | {run.get('statusReason') or ''} |",
        f"| exit code | {run.get('exitCode')} |",
        "",
    ]
    if run.get("evaluation") is not None:
        lines += [
            "<details><summary>Evaluation</summary>",
            "",
            "```json",
            json.dumps(run["evaluation"], indent=2),
            "```",
            "</details>",
            "",
        ]
    return "\n".join(lines)


def write_github_files(run: dict[str, Any], evaluation_path: Path, api: str) -> None:
    """Append step outputs and the summary when running as a GitHub Actions step."""
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(f"run-id={run['id']}\n")
            handle.write(f"status={run['status']}\n")
            handle.write(f"evaluation-path={evaluation_path}\n")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(summary_markdown(run, api) + "\n")


def _default_evaluation_path(run_id: str) -> Path:
    base = os.environ.get("RUNNER_TEMP") or "."
    return Path(base) / f"sandbox-evaluation-{run_id}.json"


@main.command()
@click.argument(
    "request_file",
    required=False,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--api", envvar="SANDBOX_API_URL", default="http://127.0.0.1:8000", show_default=True)
@click.option("--token", envvar="SANDBOX_TOKEN", default=None, help="Bearer token (default: dev).")
@click.option("--persona", help="personaId (overrides the file).")
@click.option("--method", help="methodId, e.g. seo.evaluate_content.")
@click.option("--image", help="adapterImage, e.g. ghcr.io/org/adapter@sha256:…")
@click.option(
    "--input-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="input JSON"
)
@click.option("--dry-run/--no-dry-run", default=None, help="Plan only, start no container.")
@click.option("--idempotency-key", default=None, help="Same key, same run (safe step re-runs).")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--logs/--no-logs", "show_logs", default=True, show_default=True)
@click.option("--timeout", type=float, default=360.0, show_default=True)
@click.option(
    "--evaluation-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the evaluation JSON here (in Actions: $RUNNER_TEMP/sandbox-evaluation-<id>.json).",
)
def submit(
    request_file: Path | None,
    api: str,
    token: str | None,
    persona: str | None,
    method: str | None,
    image: str | None,
    input_file: Path | None,
    dry_run: bool | None,
    idempotency_key: str | None,
    wait: bool,
    show_logs: bool,
    timeout: float,
    evaluation_file: Path | None,
) -> None:
    """Submit a run (REQUEST_FILE and/or flags), follow its logs and wait for the outcome.

    Exit codes: 0 succeeded, 1 failed, 2 refused, 3 timed_out, 4 error, 5 cancelled,
    6 still running at --timeout.
    """
    api = api.rstrip("/")
    body = build_request(request_file, persona, method, image, input_file, dry_run)
    headers = {"Authorization": f"Bearer {token or issue_token(load_settings())}"}
    post_headers = dict(headers)
    if idempotency_key:
        post_headers["Idempotency-Key"] = idempotency_key
    try:
        response = requests.post(
            f"{api}/api/sandbox/runs", json=body, headers=post_headers, timeout=30
        )
    except requests.RequestException as exc:
        click.echo(f"cannot reach {api}: {type(exc).__name__}", err=True)
        sys.exit(EXIT_REFUSED)
    if response.status_code != 202:
        click.echo(f"submit refused ({response.status_code}): {response.text}", err=True)
        sys.exit(EXIT_REFUSED)
    run_id = response.json()["id"]
    click.echo(f"submitted run {run_id}", err=True)
    if not wait:
        click.echo(run_id)
        return
    run = follow(api, run_id, headers, timeout, show_logs)
    # The evaluation file is for CI (and whoever asks for it); a developer's cwd stays clean.
    if evaluation_file or os.environ.get("GITHUB_OUTPUT") or os.environ.get("RUNNER_TEMP"):
        evaluation_path = evaluation_file or _default_evaluation_path(str(uuid.UUID(run_id)))
        evaluation_path.write_text(json.dumps(run.get("evaluation"), indent=2) + "\n")
        write_github_files(run, evaluation_path, api)
    click.echo(json.dumps(run, indent=2))
    if run["status"] not in TERMINAL:
        click.echo(f"run {run_id} still {run['status']} after {timeout:g} s", err=True)
        sys.exit(EXIT_WAIT_TIMEOUT)
    sys.exit(EXIT_CODES.get(run["status"], 1))
