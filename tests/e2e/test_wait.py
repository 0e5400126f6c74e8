"""``GET /api/sandbox/runs/<id>?wait=S``: one request that answers when the run is over."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import requests

from tests.builders import run_request
from tests.fleet import Fleet

pytestmark = pytest.mark.xdist_group("fleet")


def test_a_waiting_get_answers_when_the_run_ends(fleet: Fleet) -> None:
    run_id = fleet.submit(run_request(input={"action": "sleep", "seconds": 2}))
    # Asked right after the submission, the one answer is already the end of the run.
    response = fleet.get(f"/api/sandbox/runs/{run_id}", params={"wait": 30})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"


def test_a_wait_that_runs_out_returns_the_current_state(fleet: Fleet) -> None:
    run_id = fleet.submit(run_request(input={"action": "sleep", "seconds": 20}))
    response = fleet.get(f"/api/sandbox/runs/{run_id}", params={"wait": 1})
    assert response.status_code == 200
    assert response.json()["status"] in ("queued", "provisioning", "ready", "running")
    # A cancel wakes a request that waits for the run's end.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(fleet.get, f"/api/sandbox/runs/{run_id}", params={"wait": 25})
        time.sleep(1)
        cancel = requests.post(
            f"{fleet.base}/api/sandbox/runs/{run_id}/cancel", headers=fleet.auth, timeout=30
        )
        assert cancel.status_code == 200, cancel.text
        answer = waiting.result(timeout=30)
    assert answer.json()["status"] == "cancelled"


def test_a_wait_beyond_a_minute_or_negative_is_refused(fleet: Fleet) -> None:
    run_id = fleet.submit(run_request(dryRun=True))
    for bad in ("61", "-1", "soon"):
        response = fleet.get(f"/api/sandbox/runs/{run_id}", params={"wait": bad})
        assert response.status_code == 422, (bad, response.text)
        assert "wait" in response.text
