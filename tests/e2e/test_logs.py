"""Watching a run live and keeping every log: SSE, NDJSON, caps, blobs and signed downloads."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from shared.config import Settings
from shared.storage import local as local_store
from tests.builders import run_request
from tests.fleet import Fleet

pytestmark = pytest.mark.xdist_group("fleet")


def sse_events(
    fleet: Fleet, run_id: str, headers: dict[str, str] | None = None, on_line: Any = None
) -> list[tuple[str | None, str, dict[str, Any]]]:
    """Follow a run's SSE stream to its end; return (id, event, data) tuples."""
    events: list[tuple[str | None, str, dict[str, Any]]] = []
    with requests.get(
        f"{fleet.base}/api/sandbox/runs/{run_id}/logs",
        stream=True,
        timeout=60,
        headers={**fleet.auth, "Accept": "text/event-stream", **(headers or {})},
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        event_id, event, data = None, "message", ""
        for raw in response.iter_lines(decode_unicode=True):
            if raw.startswith(":"):
                continue
            if raw == "":
                if data:
                    events.append((event_id, event, json.loads(data)))
                    if on_line and event == "line":
                        on_line(events[-1])
                    if event == "end":
                        return events
                event_id, event, data = None, "message", ""
            elif raw.startswith("id: "):
                event_id = raw[4:]
            elif raw.startswith("event: "):
                event = raw[7:]
            elif raw.startswith("data: "):
                data = raw[6:]
    return events


def test_a_follower_sees_lines_while_the_run_is_still_running(fleet: Fleet) -> None:
    run_id = fleet.submit(run_request(input={"action": "sleep", "seconds": 4}))
    status_at_first_line: list[str] = []

    def on_line(_: Any) -> None:
        if not status_at_first_line:
            status_at_first_line.append(fleet.get(f"/api/sandbox/runs/{run_id}").json()["status"])

    events = sse_events(fleet, run_id, on_line=on_line)
    assert status_at_first_line == ["running"], "the first line arrived before the run ended"
    lines = [e for e in events if e[1] == "line"]
    assert [d["line"] for _, _, d in lines if d["line"].startswith("sleep:")] == [
        f"sleep: {i}s elapsed" for i in range(1, 5)
    ]
    assert [int(i) for i, _, _ in lines] == [d["seq"] for _, _, d in lines]
    assert events[-1][1] == "end" and events[-1][2]["status"] == "succeeded"


def test_a_line_followed_by_silence_arrives_before_the_next_is_printed(fleet: Fleet) -> None:
    # An adapter prints, then works in silence: its line must not wait for the next one (the
    # executor used to hold a line printed soon after the previous flush until more came).
    run_id = fleet.submit(run_request(input={"action": "tick", "count": 2, "intervalMs": 4000}))
    arrived: dict[str, float] = {}

    def on_line(event: tuple[str | None, str, dict[str, Any]]) -> None:
        if event[2]["line"].startswith("tick "):
            arrived.setdefault(event[2]["line"].split()[1], time.time())

    events = sse_events(fleet, run_id, on_line=on_line)
    ticks = [d["line"] for _, kind, d in events if kind == "line" and d["line"].startswith("tick")]
    assert [t.split()[1] for t in ticks] == ["0", "1"]
    printed_second = float(ticks[1].split()[2])
    assert arrived["0"] < printed_second


def test_last_event_id_resumes_without_gaps_or_repeats(fleet: Fleet) -> None:
    run_id = fleet.submit(
        run_request(input={"action": "echo", "stdout": [f"l{i}" for i in range(8)]})
    )
    fleet.wait(run_id)
    everything = [d["seq"] for _, e, d in sse_events(fleet, run_id) if e == "line"]
    resumed = [
        d["seq"] for _, e, d in sse_events(fleet, run_id, {"Last-Event-ID": "3"}) if e == "line"
    ]
    assert resumed == [s for s in everything if s > 3]


def test_two_followers_at_once_see_the_same_lines(fleet: Fleet) -> None:
    run_id = fleet.submit(run_request(input={"action": "sleep", "seconds": 3}))
    results: list[list[int]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                [d["seq"] for _, e, d in sse_events(fleet, run_id) if e == "line"]
            )
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and results[0] == results[1] and results[0]


def test_ndjson_of_a_finished_run_is_history_then_the_end(fleet: Fleet) -> None:
    run_id = fleet.submit(run_request(input={"action": "echo", "stdout": ["a", "b"]}))
    fleet.wait(run_id)
    response = fleet.get(f"/api/sandbox/runs/{run_id}/logs", params={"follow": "false"})
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    rows = [json.loads(x) for x in response.text.splitlines()]
    assert rows[-1] == {
        "event": "end",
        "status": "succeeded",
        "statusReason": None,
        "truncated": False,
    }
    assert [r["line"] for r in rows[:-1] if r["stream"] == "stdout"][:2] == ["a", "b"]


def test_output_printed_just_before_the_timeout_is_kept(fleet: Fleet) -> None:
    run = fleet.run(
        run_request(input={"action": "sleep", "seconds": 30}, resources={"timeoutS": 2})
    )
    assert run["status"] == "timed_out"
    assert "sleep: 1s elapsed" in [x["line"] for x in fleet.log_lines(run["id"])]
    assert "sleep: 1s elapsed" in download(fleet, run["id"], "stdout").text


def download(fleet: Fleet, run_id: str, stream: str) -> requests.Response:
    response = fleet.get(
        f"/api/sandbox/runs/{run_id}/logs/{stream}/download", allow_redirects=False
    )
    assert response.status_code == 302, response.text
    return requests.get(f"{fleet.base}{response.headers['Location']}", timeout=30)


def test_the_blob_log_equals_the_stored_lines(fleet: Fleet) -> None:
    run_id = fleet.submit(
        run_request(
            input={
                "action": "echo",
                "stdout": ["one", "two", "card 4111 1111 1111 1111"],
                "stderr": ["e"],
            }
        )
    )
    fleet.wait(run_id)
    stored = fleet.log_lines(run_id)
    for stream in ("stdout", "stderr"):
        blob = download(fleet, run_id, stream).text
        assert blob == "".join(x["line"] + "\n" for x in stored if x["stream"] == stream)
    assert "4111" not in download(fleet, run_id, "stdout").text


def test_expired_and_tampered_download_links_are_refused(
    fleet: Fleet, fleet_settings: Settings
) -> None:
    run_id = fleet.submit(run_request())
    fleet.wait(run_id)
    link = fleet.get(
        f"/api/sandbox/runs/{run_id}/logs/stdout/download", allow_redirects=False
    ).headers["Location"]
    url = urlparse(link)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    tampered = requests.get(
        f"{fleet.base}{url.path.replace('stdout', 'stderr')}?{url.query}", timeout=10
    )
    assert tampered.status_code == 403
    assert tampered.json()["message"] == "download link refused: bad signature"
    key = fleet_settings.blob_signing_key_path.read_bytes()
    past = int(time.time()) - 5
    path = url.path.removeprefix("/api/sandbox/blobs/")
    expired = requests.get(
        f"{fleet.base}{url.path}",
        timeout=10,
        params={"expires": past, "sig": local_store.sign(key, path, past)},
    )
    assert expired.status_code == 403
    assert expired.json()["message"] == "download link refused: expired"
    assert int(query["expires"]) - time.time() <= 300
    missing = fleet.get(f"/api/sandbox/runs/{run_id}/logs/stdin/download", allow_redirects=False)
    assert missing.status_code == 404


def test_a_run_printing_50_mib_is_capped_with_exact_byte_counts(fleet: Fleet) -> None:
    lines, width = 51_200, 1023  # 50 MiB of output, 1024 bytes a line with its newline
    run = fleet.run(
        run_request(
            input={"action": "spam", "lines": lines, "width": width}, resources={"logCapMb": 5}
        ),
        timeout=240,
    )
    assert run["status"] == "succeeded", run["statusReason"]
    stdout = run["logs"]["streams"]["stdout"]
    assert stdout["bytesSeen"] >= lines * (width + 1)  # plus the evaluation line
    kept = stdout["bytesKept"] + run["logs"]["streams"]["stderr"]["bytesKept"]
    assert 5 * 1024 * 1024 - 2 * (width + 1) < kept <= 5 * 1024 * 1024
    assert stdout["bytesKept"] % (width + 1) == 0
    assert stdout["bytesInline"] <= 1024 * 1024
    assert run["logs"]["truncated"] is True
    blob = download(fleet, run["id"], "stdout")
    assert len(blob.content) == stdout["bytesKept"]


def test_a_run_printing_past_the_engines_log_rotation_keeps_every_line(fleet: Fleet) -> None:
    # The engine rotates a container's json-file log at 128 MB, and following that log loses
    # lines or stops there (the run used to fail: its evaluation was never seen). The executor
    # reads an attach instead; 140 MiB under a 150 MiB cap must all arrive, in order.
    lines, width = 143_360, 1023
    run = fleet.run(
        run_request(
            input={"action": "spam", "lines": lines, "width": width},
            resources={"logCapMb": 150, "timeoutS": 240},
        ),
        timeout=300,
    )
    assert run["status"] == "succeeded", run["statusReason"]
    assert run["evaluation"]["lines"] == lines
    stdout = run["logs"]["streams"]["stdout"]
    assert stdout["bytesKept"] == lines * (width + 1)
    assert run["logs"]["truncated"] is True  # past the 1 MiB kept inline, not past the cap
    blob = download(fleet, run["id"], "stdout").content
    assert len(blob) == lines * (width + 1)
    # Every 4096th line is where it belongs: none lost or repeated before it.
    numbers = [int(blob[i : i + 8]) for i in range(0, len(blob), (width + 1) * 4096)]
    assert numbers == list(range(0, lines, 4096))
    assert blob.endswith(b"%08d " % (lines - 1) + b"x" * (width - 9) + b"\n")
