"""Run events reach Event Hubs over AMQP from the fleet's own outbox relay.

The fleet runs as real processes with ``SANDBOX_EVENT_SINK=eventhub`` and the connection string
in a secret (``SANDBOX_EVENTHUB_CONNECTION_REF=env:...``), as an operator would configure an
emulator or a SAS-key namespace; the finalizer's relay (beat, every second) publishes with the
real ``EventHubProducerClient`` to the AMQP SIMULATOR of ``tests/sim/amqp_sim.py``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from shared.auth import issue_token
from shared.config import load_settings
from shared.db.migrate import ensure_database, migrate
from tests.builders import run_request
from tests.fleet import Fleet, RedisServer, free_port, start_fleet, stop_fleet, wait_ready
from tests.sim.amqp_sim import AmqpSimulator
from tests.sim.fixtures import amqp_sim, amqp_sim_session  # noqa: F401

HUB = "sandbox-events"


@pytest.fixture(scope="module")
def events_fleet(
    settings_env: dict[str, str],
    amqp_sim_session: AmqpSimulator,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    database_url = settings_env["SANDBOX_DATABASE_URL"] + "_amqp"
    ensure_database(database_url)
    migrate(database_url)
    redis = RedisServer(tmp_path_factory.mktemp("amqp-redis"))
    redis.start()
    fleet_env = {
        **settings_env,
        "SANDBOX_DATABASE_URL": database_url,
        "SANDBOX_BROKER_URL": redis.url,
        "SANDBOX_FLEET_NAME": "amqp-" + database_url.rsplit("/", 1)[1],
        "SANDBOX_EVENT_SINK": "eventhub",
        "SANDBOX_EVENTHUB_NAME": HUB,
        "SANDBOX_EVENTHUB_CONNECTION_REF": "env:SANDBOX_TEST_EVENTHUB_CONNECTION",
        **{
            f"SANDBOX_{name}_METRICS_PORT": "0" for name in ("PROVISIONER", "EXECUTOR", "FINALIZER")
        },
    }
    logs = tmp_path_factory.mktemp("amqp-fleet-logs")
    port = free_port()
    env = {
        **os.environ,
        **fleet_env,
        "SANDBOX_TEST_EVENTHUB_CONNECTION": amqp_sim_session.connection_string(),
        "PYTHONUNBUFFERED": "1",
    }
    procs = start_fleet(env, logs, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, procs, logs)
        yield Fleet(base=base, token=issue_token(load_settings(fleet_env)), logs=logs, procs=procs)
    finally:
        stop_fleet(procs)
        redis.stop()


def test_every_state_change_of_a_run_reaches_the_hub_in_order(
    events_fleet: Fleet,
    amqp_sim: AmqpSimulator,  # noqa: F811
) -> None:
    run = events_fleet.run(run_request(input={"action": "echo", "value": 5}))
    assert run["status"] == "succeeded", run
    statuses: list[str] = []
    deadline = time.monotonic() + 30
    while "succeeded" not in statuses:
        assert time.monotonic() < deadline, f"events seen: {statuses}"
        time.sleep(0.2)
        mine = [e for e in list(amqp_sim.received) if e.partition_key == run["id"]]
        statuses = [json.loads(e.body)["data"]["status"] for e in mine]
    assert statuses == ["queued", "provisioning", "ready", "running", "finalizing", "succeeded"]
    assert all(e.entity == HUB for e in mine)
    assert len({e.application_properties["eventId"] for e in mine}) == len(mine)
    assert any(audience.endswith(f"/{HUB}") for audience in amqp_sim.tokens)
