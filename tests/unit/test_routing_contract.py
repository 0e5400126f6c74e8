"""Every task routes to a queue that some service consumes, and the fleet starts them so."""

from __future__ import annotations

import re
from pathlib import Path

from shared.queues import ROUTES, SERVICE_QUEUES, Queues, TaskNames

FLEET = Path(__file__).resolve().parents[2] / "infra" / "local" / "fleet.sh"


def test_every_task_has_a_consumed_queue() -> None:
    consumed = {q for queues in SERVICE_QUEUES.values() for q in queues}
    task_names = {v for k, v in vars(TaskNames).items() if k.isupper()}
    assert task_names == set(ROUTES)
    assert set(ROUTES.values()) <= consumed
    assert consumed == set(Queues.all())


def test_the_fleet_script_starts_each_service_on_its_queues() -> None:
    text = FLEET.read_text()
    for service, queues in SERVICE_QUEUES.items():
        match = re.search(rf"^{service}\|.*services\.{service}\.worker worker -Q (\S+)", text, re.M)
        assert match, f"fleet.sh does not start {service}"
        assert match.group(1).split(",") == queues
