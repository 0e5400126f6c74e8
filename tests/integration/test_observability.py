"""Runs listing, /metrics and the operator CLI, in-process against real Postgres and Redis."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from click.testing import CliRunner
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import ConnectionPool

from shared import metrics
from shared.cli import main
from shared.config import Settings
from shared.db import runs as runs_db
from shared.states import RunStatus
from tests.builders import PERSONA, stored_run


def make_runs(pool: ConnectionPool, n: int, method: str = "test.run", **kw: Any) -> list[uuid.UUID]:
    ids = []
    with pool.connection() as conn:
        for _ in range(n):
            run = stored_run(
                conn,
                persona_id=uuid.UUID(PERSONA),
                method_id=method,
                adapter_image="localhost:5000/test-adapter:dev",
                **kw,
            )
            ids.append(run.id)
    return ids


def test_runs_are_listed_newest_first_with_filters_and_a_cursor(
    client: FlaskClient, auth: dict[str, str], pool: ConnectionPool
) -> None:
    seo = make_runs(pool, 2, method="seo.evaluate_content")
    tests = make_runs(pool, 5)
    with pool.connection() as conn:
        runs_db.transition(conn, tests[0], RunStatus.CANCELLED, reason="cancelled: by t")

    pages: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "methodId": "test.run"}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/sandbox/runs", query_string=params, headers=auth).get_json()
        pages += [r["id"] for r in body["runs"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    # One transaction gave them one queued_at: the id breaks the tie, and no page repeats or skips.
    assert pages == sorted((str(i) for i in tests), reverse=True)

    queued = client.get(
        "/api/sandbox/runs", query_string={"status": ["queued", "ready"]}, headers=auth
    ).get_json()
    assert {r["id"] for r in queued["runs"]} == {str(i) for i in [*seo, *tests[1:]]}
    cancelled = client.get(
        "/api/sandbox/runs", query_string={"status": "cancelled"}, headers=auth
    ).get_json()["runs"]
    assert [r["id"] for r in cancelled] == [str(tests[0])]
    assert cancelled[0]["link"] == f"/api/sandbox/runs/{tests[0]}"

    other = client.get(
        "/api/sandbox/runs", query_string={"personaId": str(uuid.uuid4())}, headers=auth
    ).get_json()
    assert other == {"runs": [], "nextCursor": None}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (
        client.get(
            "/api/sandbox/runs", query_string={"createdAfter": future}, headers=auth
        ).get_json()["runs"]
        == []
    )
    assert (
        len(
            client.get(
                "/api/sandbox/runs", query_string={"createdBefore": future}, headers=auth
            ).get_json()["runs"]
        )
        == 7
    )


def test_bad_list_parameters_are_422_and_the_list_needs_a_token(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    for params in ({"limit": 501}, {"limit": 0}, {"status": "nope"}, {"cursor": "!!"}):
        response = client.get("/api/sandbox/runs", query_string=params, headers=auth)
        assert response.status_code == 422, params
    assert client.get("/api/sandbox/runs").status_code == 401


def test_the_list_is_in_the_openapi_document(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    operation = spec["paths"]["/api/sandbox/runs"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"status", "personaId", "methodId", "createdAfter", "createdBefore", "cursor"} <= names
    assert {"limit"} <= names
    assert "post" in spec["paths"]["/api/sandbox/runs"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("RunList")


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_show_the_queues_and_the_runs_waiting(
    client: FlaskClient, pool: ConnectionPool, settings: Settings, auth: dict[str, str]
) -> None:
    broker = redis.Redis.from_url(settings.broker_url)
    broker.delete("execute")
    sent = time.time() - 30
    broker.lpush("execute", json.dumps({"headers": {"sentAt": sent}, "body": ""}))
    broker.lpush("execute", json.dumps({"headers": {"sentAt": time.time()}, "body": ""}))
    make_runs(pool, 2, deadline_s=-1)
    client.get("/api/sandbox/runs", headers=auth)
    try:
        samples = parse(client.get("/metrics").get_data(as_text=True))
    finally:
        broker.delete("execute")
    assert samples[("sandbox_queue_depth", frozenset({("queue", "execute")}))] == 2
    age = samples[("sandbox_queue_oldest_message_age_seconds", frozenset({("queue", "execute")}))]
    assert age >= 30
    assert samples[("sandbox_runs_in_status", frozenset({("status", "queued")}))] == 2
    assert samples[("sandbox_runs_past_deadline", frozenset())] == 2
    assert samples[("sandbox_outbox_unsent", frozenset())] == 0
    assert samples[("sandbox_fleet_collector_up", frozenset())] == 1
    listed = ("route", "/api/sandbox/runs"), ("method", "GET"), ("status", "200")
    assert samples[("sandbox_api_requests_total", frozenset(listed))] >= 1


def test_a_terminal_transition_counts_the_run_once(pool: ConnectionPool) -> None:
    (rid,) = make_runs(pool, 1, method="test.counted")
    labels = ("cancelled", "test.counted", "none")
    before = metrics.RUNS.labels(*labels)._value.get()
    with pool.connection() as conn:
        assert runs_db.transition(conn, rid, RunStatus.CANCELLED, reason="cancelled: t")
        assert runs_db.transition(conn, rid, RunStatus.CANCELLED) is None
    assert metrics.RUNS.labels(*labels)._value.get() == before + 1


def cli(settings_env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=settings_env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_operator_cli_lists_shows_cancels_and_redrives(
    pool: ConnectionPool, settings_env: dict[str, str], settings: Settings
) -> None:
    late, fresh = make_runs(pool, 1, deadline_s=-1) + make_runs(pool, 1)
    listed = [json.loads(x) for x in cli(settings_env, "runs", "--json").splitlines()]
    assert [r["id"] for r in listed] == [str(fresh), str(late)]  # two transactions: newest first
    assert cli(settings_env, "runs", "--status", "cancelled").count("\n") == 1  # header only
    assert str(late) in cli(settings_env, "stuck")
    assert str(fresh) not in cli(settings_env, "stuck")

    broker = redis.Redis.from_url(settings.broker_url)
    broker.delete("provision")
    assert "sandbox.provision published" in cli(settings_env, "redrive", str(fresh))
    # Another test's api may still publish into this Redis db: look for this run's message.
    assert any(str(fresh).encode() in m for m in broker.lrange("provision", 0, -1))
    assert "provision" in cli(settings_env, "queues")
    broker.delete("provision")

    assert "cancelled" in cli(settings_env, "cancel", str(late), "--by", "ops-test")
    shown = cli(settings_env, "show", str(late))
    assert "queued -> cancelled  (cancelled: by ops-test)" in shown
    assert "- -> queued" in shown
    result = CliRunner().invoke(main, ["redrive", str(late)], env=settings_env)
    assert result.exit_code == 1 and "nothing to redrive" in result.output
