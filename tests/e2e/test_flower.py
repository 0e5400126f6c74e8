"""Flower behind basic auth, seen in headless Chromium: every queue has an online worker."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from shared.queues import Queues
from tests.builders import run_request
from tests.fleet import BIN, ROOT, Fleet, free_port

pytestmark = pytest.mark.xdist_group("fleet")

USER, PASSWORD = "operator", "flower-test-secret"


@pytest.fixture
def flower(
    fleet: Fleet, fleet_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, **fleet_env, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    out = (tmp_path / "flower.log").open("ab")
    proc = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "services.finalizer.worker",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
            "--persistent=True",
            f"--db={tmp_path / 'flower.db'}",
            "--max_tasks=10000",
        ],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "flower.log").read_text()[-3000:]
            try:
                if requests.get(f"{base}/healthcheck", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "flower did not start"
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    os.environ["SE_OFFLINE"] = "true"  # never let selenium-manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def test_flower_needs_a_password_and_shows_a_worker_on_every_queue(
    flower: tuple[str, subprocess.Popen[bytes]], browser: webdriver.Chrome, tmp_path: Path
) -> None:
    base, _ = flower
    assert requests.get(f"{base}/workers", timeout=10).status_code == 401

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )

    # Which queue each online worker consumes, as Flower reports it (its JSON API, in the browser).
    wanted = {Queues.PROVISION, Queues.EXECUTE, Queues.FINALIZE, Queues.MAINTENANCE}
    consumed: set[str] = set()
    deadline = time.monotonic() + 60
    while not wanted <= consumed:
        assert time.monotonic() < deadline, f"queues without a worker: {wanted - consumed}"
        browser.get(f"{base}/api/workers?refresh=1")
        workers = json.loads(browser.find_element(By.TAG_NAME, "body").text or "{}")
        consumed = {
            queue["name"]
            for info in workers.values()
            if isinstance(info, dict)
            for queue in info.get("active_queues") or []
        }
        if not wanted <= consumed:
            time.sleep(1)

    browser.get(f"{base}/workers")
    deadline = time.monotonic() + 30
    while True:
        # Narrow table cells wrap long worker names over lines.
        text = browser.find_element(By.TAG_NAME, "body").text.replace("\n", "")
        names = [n for n in ("provisioner-", "executor-", "finalizer-") if n in text]
        if len(names) == 3 and "Online" in text:
            break
        assert time.monotonic() < deadline, text[-2000:]
        time.sleep(0.5)
        browser.refresh()
    shot = tmp_path / "flower-workers.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 0
    print(f"Flower screenshot: {shot}")


def test_flower_shows_each_hop_of_a_run_as_a_task(
    flower: tuple[str, subprocess.Popen[bytes]], fleet: Fleet
) -> None:
    base, _ = flower
    run = fleet.run(run_request())
    assert run["status"] == "succeeded", run
    # The workers send task events in batches (shared/celery_consumer.py); Flower unpacks them.
    wanted = {"sandbox.provision", "sandbox.execute", "sandbox.finalize"}
    deadline = time.monotonic() + 30
    while True:
        tasks = requests.get(
            f"{base}/api/tasks", auth=(USER, PASSWORD), params={"limit": 1000}, timeout=10
        ).json()
        states = {
            task["name"]: task["state"]
            for task in tasks.values()
            if run["id"] in str(task.get("args"))
        }
        if wanted <= set(states) and set(states.values()) == {"SUCCESS"}:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.5)
