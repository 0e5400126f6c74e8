"""Result webhooks and GitHub commit statuses: scheduled by the outbox relay, sent by a beat task.

Each ``sandbox.run.state_changed`` event becomes, in the relay's transaction, one delivery per
target the run asked for (its ``callback``; a commit status when it has ``github`` and the
status is ``running`` or terminal). ``deliver_due`` claims due deliveries, posts them with a
short timeout, and records every attempt; a non-2xx answer or a timeout is retried with
exponential backoff and jitter until the horizon, then the delivery is ``dead``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from shared.db import deliveries
from shared.db import runs as runs_db
from shared.redaction import Redactor
from shared.runtime import Runtime
from shared.secrets import SecretError, provider_for
from shared.states import TERMINAL, RunStatus
from shared.webhooks import signing
from shared.webhooks.endpoints import CallbackError, resolve
from shared.webhooks.ssrf import AllowList, UnsafeURL, check_url

logger = logging.getLogger(__name__)

# Run status -> commit status state. ``running`` posts pending; the rest are final.
GITHUB_STATES: dict[str, str] = {
    RunStatus.RUNNING.value: "pending",
    RunStatus.SUCCEEDED.value: "success",
    RunStatus.FAILED.value: "failure",
    RunStatus.TIMED_OUT.value: "failure",
    RunStatus.ERROR.value: "error",
    RunStatus.CANCELLED.value: "error",
}
USER_AGENT = "sandbox-runner-webhooks/1"
_TERMINAL_VALUES = {s.value for s in TERMINAL}


def run_links(public_url: str, run_id: str) -> dict[str, str]:
    """Return absolute links to a run for people and tools outside the fleet."""
    base = f"{public_url.rstrip('/')}/api/sandbox/runs/{run_id}"
    return {"self": base, "logs": f"{base}/logs", "deliveries": f"{base}/deliveries"}


def webhook_body(run: runs_db.Run, event: dict[str, Any], public_url: str) -> dict[str, Any]:
    """Return the (unredacted) webhook body for one state change of ``run``."""
    final = event["status"] in _TERMINAL_VALUES
    return {
        "runId": str(run.id),
        "status": event["status"],
        "statusReason": event.get("statusReason"),
        # The result exists only once the run is over; earlier changes carry none.
        "evaluation": run.evaluation if final else None,
        "logsPreview": run.logs_preview if final else None,
        "links": run_links(public_url, str(run.id)),
    }


def status_body(run: runs_db.Run, event: dict[str, Any], public_url: str) -> dict[str, Any]:
    """Return the commit status request for one state change (GitHub caps description at 140)."""
    github = run.github or {}
    reason = event.get("statusReason") or f"run {event['status']}"
    return {
        "state": GITHUB_STATES[event["status"]],
        "target_url": github.get("targetUrl") or run_links(public_url, str(run.id))["self"],
        "description": reason[:140],
        "context": github.get("context") or f"sandbox-runner/{run.method_id}",
    }


def runs_with_targets(conn: Any, run_ids: list[Any]) -> set[Any]:
    """The runs among ``run_ids`` with a callback or a GitHub target: those events schedule."""
    if not run_ids:
        return set()
    rows = conn.execute(
        "SELECT id FROM sandbox_run WHERE id = ANY(%s) "
        "AND (callback IS NOT NULL OR github IS NOT NULL)",
        (list(set(run_ids)),),
    ).fetchall()
    return {row["id"] for row in rows}


def schedule_for_event(rt: Runtime, conn: Any, row: dict[str, Any]) -> int:
    """Schedule the deliveries a state-changed outbox row calls for, in the caller's transaction.

    A failure here is logged and skipped (inside a savepoint) rather than raised: one bad
    callback must never stop the relay from publishing everyone else's events.
    """
    try:
        with conn.transaction():
            return _schedule(rt, conn, row)
    except Exception:
        logger.exception(
            "could not schedule deliveries for event %s",
            row.get("event_id"),
            extra={"runId": str(row.get("run_id"))},
        )
        return 0


def _schedule(rt: Runtime, conn: Any, row: dict[str, Any]) -> int:
    event = row["payload"]
    wants_status = event.get("status") in GITHUB_STATES
    run = runs_db.get_run(conn, row["run_id"])
    if run is None or (not run.callback and not (run.github and wants_status)):
        return 0
    settings = rt.settings
    provider = provider_for(settings)
    secrets: list[str] = []
    webhook_target: dict[str, Any] | None = None
    if run.callback:
        webhook_target = dict(run.callback)
        try:
            secrets.append(provider.get(resolve(settings, run.callback).secret_ref))
        except (SecretError, CallbackError) as exc:
            # The send will fail and retry, or end failed; the body is still redacted.
            logger.warning("callback secret unavailable: %s", exc, extra={"runId": str(run.id)})
    if run.github and wants_status and settings.github_token_ref:
        try:
            secrets.append(provider.get(settings.github_token_ref))
        except SecretError as exc:
            logger.warning("GitHub token unavailable: %s", exc, extra={"runId": str(run.id)})
    redactor = rt.redactor(tuple(secrets))
    scheduled = 0
    if webhook_target is not None:
        body = redactor.redact_value(webhook_body(run, event, settings.public_url))
        added = deliveries.add(
            conn,
            run_id=run.id,
            event_id=row["event_id"],
            kind=deliveries.WEBHOOK,
            event_status=event["status"],
            target=webhook_target,
            payload=body,
            horizon_s=settings.webhook_horizon_s,
        )
        scheduled += added is not None
    if run.github and wants_status:
        if not settings.github_token_ref:
            logger.warning("run has github but SANDBOX_GITHUB_TOKEN_REF is not set")
        else:
            added = deliveries.add(
                conn,
                run_id=run.id,
                event_id=row["event_id"],
                kind=deliveries.GITHUB_STATUS,
                event_status=event["status"],
                target={k: run.github[k] for k in ("repository", "sha") if k in run.github},
                payload=redactor.redact_value(status_body(run, event, settings.public_url)),
                horizon_s=settings.webhook_horizon_s,
            )
            scheduled += added is not None
    return scheduled


@dataclass(frozen=True)
class Outcome:
    """What one attempt did."""

    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    refused: bool = False  # never retried: the target may not be called at all

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff_s(rt: Runtime, attempts: int) -> float:
    """Return the wait before the next try: exponential, capped, with jitter (50-100 %)."""
    base = rt.settings.webhook_backoff_base_s * (2 ** max(0, attempts - 1))
    return min(base, rt.settings.webhook_backoff_max_s) * random.uniform(0.5, 1.0)


def deliver_due(rt: Runtime, limit: int = 20, max_parallel: int = 8) -> dict[str, int]:
    """Send the deliveries that are due; return how many ended in each state (or were retried)."""
    lease_s = rt.settings.webhook_timeout_s * 2 + 30
    with rt.pool.connection() as conn:
        claimed = deliveries.claim_due(conn, limit, lease_s)
    if not claimed:
        return {}
    counts: dict[str, int] = {}
    with requests.Session() as session:
        session.trust_env = False  # no proxies from the environment: the SSRF check is the law
        with ThreadPoolExecutor(min(max_parallel, len(claimed))) as pool:
            outcomes = list(pool.map(lambda d: send(rt, session, d), claimed))
    redactor = rt.redactor()
    for delivery, outcome in zip(claimed, outcomes, strict=True):
        with rt.pool.connection() as conn:
            state, retry_in = "pending", None
            if outcome.ok:
                state = "succeeded"
            elif outcome.refused:
                state = "failed"
            else:
                retry_in = backoff_s(rt, delivery.attempts)
                if retry_in > deliveries.seconds_left(conn, delivery.id):
                    state, retry_in = "dead", None
            deliveries.record_attempt(
                conn,
                delivery,
                started_at=outcome.started_at,
                duration_ms=outcome.duration_ms,
                status_code=outcome.status_code,
                error=redactor.redact_text(outcome.error) if outcome.error else None,
                state=state,
                retry_in_s=retry_in,
            )
        key = "retried" if state == "pending" else state
        counts[key] = counts.get(key, 0) + 1
        log = logger.info if state in ("succeeded", "pending") else logger.warning
        log(
            "delivery %s %s attempt %d: %s",
            delivery.kind,
            delivery.id,
            delivery.attempts,
            state,
            extra={"runId": str(delivery.run_id), "statusCode": outcome.status_code},
        )
    return counts


def build_request(rt: Runtime, delivery: deliveries.Delivery) -> tuple[str, dict[str, str], bytes]:
    """Return URL, headers and body of one attempt; raise UnsafeURL, CallbackError, SecretError."""
    settings = rt.settings
    provider = provider_for(settings)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if delivery.kind == deliveries.GITHUB_STATUS:
        if not settings.github_token_ref:
            raise SecretError("SANDBOX_GITHUB_TOKEN_REF is not set")
        token = provider.get(settings.github_token_ref)
        payload = Redactor(secrets=(token,)).redact_value(delivery.payload)
        url = (
            f"{settings.github_api_url.rstrip('/')}/repos/{delivery.target['repository']}"
            f"/statuses/{delivery.target['sha']}"
        )
        headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            }
        )
        return url, headers, json.dumps(payload, separators=(",", ":")).encode()
    target = resolve(settings, delivery.target)
    # Again at send time: the name may resolve elsewhere now than when the run was submitted.
    check_url(
        target.url,
        allow_http=settings.webhook_allow_http,
        allow=AllowList.parse(settings.webhook_allowed_networks),
    )
    secret = provider.get(target.secret_ref)
    payload = delivery.payload
    body = json.dumps(payload, separators=(",", ":")).encode()
    if secret in body.decode():
        body = json.dumps(
            Redactor(secrets=(secret,)).redact_value(payload), separators=(",", ":")
        ).encode()
    headers.update(
        {
            signing.SIGNATURE_HEADER: signing.sign(secret, body, int(time.time())),
            signing.DELIVERY_HEADER: str(delivery.id),
            signing.EVENT_HEADER: "sandbox.run.state_changed",
            "X-Sandbox-Attempt": str(delivery.attempts),
        }
    )
    return target.url, headers, body


def send(rt: Runtime, session: requests.Session, delivery: deliveries.Delivery) -> Outcome:
    """Make one attempt; never raises."""
    started_at = datetime.now(UTC)
    t0 = time.monotonic()

    def done(**kwargs: Any) -> Outcome:
        return Outcome(started_at, int((time.monotonic() - t0) * 1000), **kwargs)

    try:
        url, headers, body = build_request(rt, delivery)
    except UnsafeURL as exc:
        return done(error=f"refused: {exc}", refused=True)
    except (CallbackError, SecretError) as exc:
        return done(error=str(exc))
    except Exception as exc:  # a bug must not lose the attempt's record
        logger.exception("cannot build delivery %s", delivery.id)
        return done(error=f"internal: {type(exc).__name__}")
    timeout = rt.settings.webhook_timeout_s
    try:
        response = session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        )
        response.close()  # the answer's body is not needed; do not read an unbounded one
    except requests.Timeout:
        return done(error=f"timeout after {timeout:g} s")
    except requests.RequestException as exc:
        return done(error=f"connection failed: {type(exc).__name__}")
    return done(
        status_code=response.status_code,
        error=None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}",
    )
