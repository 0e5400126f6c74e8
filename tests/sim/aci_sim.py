"""A local simulator of the ARM container groups API (Microsoft.ContainerInstance, 2023-05-01).

It serves HTTPS on 127.0.0.1 so the real ``ContainerInstanceManagementClient`` runs its real
pipeline (bearer token policy included) against it. It implements what the runner calls: PUT,
GET, DELETE and list of container groups, GET of a container's logs, and the region's usage.

The "container" is SCRIPTED, not run: the simulator decodes the input from the group's secret
volume and plays the test adapter's actions (``infra/adapters/testkit``) on a clock: ``echo``
prints and succeeds, ``exit`` exits with ``code``, ``sleep`` prints once a second, ``oom``
ends 137 with detail status ``OOMKilled``, ``spam`` prints ``lines`` numbered lines of
``width`` characters spread over ``seconds``, then ``burst`` more at once (both
simulator-only knobs);
anything else succeeds with an empty evaluation. State moves Pending -> Running -> Terminated
as ACI's instance view does.

The logs API answers as ACI's does: only the TAIL of the container's log, the last
``running_log_bytes`` (4 MB) while the container runs and the last ``stopped_log_lines``
(1,000) lines / ``stopped_log_bytes`` (16 KB) once it has stopped, cut at a byte (so the
first line may be partial). Tests shrink the running window to make it slide.

Faults a test can inject: ``unavailable`` (503 on everything), ``throttle`` (the next N
requests get 429 with Retry-After: 0), ``refuse_create`` ((status, ARM code) answered to
every create while reads work: 503 or quota at execution time), ``quota_limit`` (the usage
API's group limit), ``pull_error_images`` (provisioning fails with a pull error),
``fail_provisioning``, ``start_delay_s`` (slow starts).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.adapter_sdk import EVALUATION_MARKER
from tests.sim import serving
from tests.sim.credential import TOKEN
from tests.sim.tls import Tls

_GROUP = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.ContainerInstance/containerGroups(?:/(?P<name>[^/]+))?"
    r"(?:/containers/(?P<container>[^/]+)/logs)?$"
)
_USAGE = re.compile(
    r"^/subscriptions/[^/]+/providers/Microsoft\.ContainerInstance/locations/[^/]+/usages$"
)
RUNNING_LOG_BYTES = 4 * 1024 * 1024
STOPPED_LOG_BYTES = 16 * 1024
STOPPED_LOG_LINES = 1000


@dataclass
class Script:
    """What the simulated container does: timed output lines, then an exit."""

    lines: list[tuple[float, str]]
    duration_s: float
    exit_code: int
    detail: str = "Completed"


@dataclass
class Group:
    name: str
    body: dict[str, Any]
    created: float
    script: Script
    start_delay_s: float
    failure: str | None = None
    killed_at: float | None = None


@dataclass
class AciSimulator:
    """The simulator's state; the HTTP handler reads and changes it under ``lock``."""

    tls: Tls
    unavailable: bool = False
    throttle: int = 0
    quota_limit: int = 100
    fail_provisioning: bool = False
    pull_error_images: set[str] = field(default_factory=set)
    start_delay_s: float = 0.0
    refuse_create: tuple[int, str] | None = None
    running_log_bytes: int = RUNNING_LOG_BYTES
    stopped_log_bytes: int = STOPPED_LOG_BYTES
    stopped_log_lines: int = STOPPED_LOG_LINES
    log_reads: int = 0
    groups: dict[str, Group] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> AciSimulator:
        sim = self

        class Handler(_Handler):
            simulator = sim

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = self.tls.server_context().wrap_socket(
            self._server.socket, server_side=True
        )
        self.port = serving.serve_in_background(self._server, "aci-sim")
        return self

    def stop(self) -> None:
        serving.stop(self._server)

    def reset(self) -> None:
        with self.lock:
            self.unavailable = False
            self.throttle = 0
            self.quota_limit = 100
            self.fail_provisioning = False
            self.pull_error_images = set()
            self.start_delay_s = 0.0
            self.refuse_create = None
            self.running_log_bytes = RUNNING_LOG_BYTES
            self.stopped_log_bytes = STOPPED_LOG_BYTES
            self.stopped_log_lines = STOPPED_LOG_LINES
            self.log_reads = 0
            self.groups.clear()
            self.created.clear()
            self.deleted.clear()
            self.requests.clear()

    def add_orphan(self, name: str, tags: dict[str, str]) -> None:
        """Put a group there as if an earlier process had created it and then died."""
        body = {"location": "westeurope", "tags": tags, "properties": {"containers": []}}
        with self.lock:
            self.groups[name] = Group(name, body, time.time(), Script([], 3600, 0), 0.0)

    # --- the container's clock -------------------------------------------------------------

    def view(self, group: Group, now: float) -> dict[str, Any]:
        """Return the group as ARM shows it at ``now`` (secrets and secure values stripped)."""
        props = json.loads(json.dumps(group.body.get("properties", {})))
        for volume in props.get("volumes", []):
            volume.pop("secret", None)  # ARM never returns secret volume contents
        started = group.created + group.start_delay_s
        script = group.script
        end = started + script.duration_s
        if group.killed_at is not None:
            end = min(end, group.killed_at)
        current: dict[str, Any]
        group_events: list[dict[str, Any]] = []
        if group.failure:
            provisioning, state = "Failed", "Failed"
            current = {"state": "Waiting", "detailStatus": group.failure}
            group_events.append({"name": "Failed", "message": group.failure, "type": "Warning"})
        elif now < started:
            provisioning, state = "Creating", "Pending"
            current = {"state": "Waiting", "detailStatus": "ContainerCreating"}
        elif now < end:
            provisioning, state = "Succeeded", "Running"
            current = {"state": "Running", "startTime": _iso(started), "detailStatus": ""}
        else:
            provisioning = "Succeeded"
            exit_code = script.exit_code if group.killed_at is None else 137
            state = "Succeeded" if exit_code == 0 else "Failed"
            current = {
                "state": "Terminated",
                "startTime": _iso(started),
                "finishTime": _iso(end),
                "exitCode": exit_code,
                "detailStatus": script.detail if group.killed_at is None else "Killed",
            }
        for container in props.get("containers", []):
            cprops = container.setdefault("properties", {})
            for env in cprops.get("environmentVariables", []):
                env.pop("secureValue", None)  # write-only in ARM
            cprops["instanceView"] = {"restartCount": 0, "currentState": current, "events": []}
        props["provisioningState"] = provisioning
        props["instanceView"] = {"state": state, "events": group_events}
        return {
            "id": f"/subscriptions/sub/resourceGroups/rg/providers/"
            f"Microsoft.ContainerInstance/containerGroups/{group.name}",
            "name": group.name,
            "type": "Microsoft.ContainerInstance/containerGroups",
            "location": group.body.get("location"),
            "tags": group.body.get("tags", {}),
            "identity": group.body.get("identity"),
            "properties": props,
        }

    def log(self, group: Group, now: float) -> str:
        """Return what the logs API answers at ``now``: the tail of the log (see the docstring)."""
        started = group.created + group.start_delay_s
        end = started + group.script.duration_s
        if group.killed_at is not None:
            end = min(end, group.killed_at)
        upto = min(now, end) - started
        lines = [text for offset, text in group.script.lines if offset <= upto]
        keep = self.running_log_bytes
        if now >= end:  # stopped: ACI keeps only the tail
            lines = lines[-self.stopped_log_lines :]
            keep = self.stopped_log_bytes
        data = "".join(f"{line}\n" for line in lines).encode()
        return data[-keep:].decode(errors="ignore")  # a cut character is dropped, as ACI does


def script_for(input_json: dict[str, Any]) -> Script:
    """Play the test adapter's actions (see the module docstring)."""
    action = input_json.get("action", "echo")
    evaluation = lambda value: f"{EVALUATION_MARKER}{json.dumps(value)}"  # noqa: E731
    if action == "echo":
        out = [str(s) for s in input_json.get("stdout", [])]
        out += [str(s) for s in input_json.get("stderr", [])]
        lines = [(0.0, line) for line in out]
        lines.append((0.0, evaluation({"echo": input_json.get("value")})))
        return Script(lines, 0.3, 0)
    if action == "exit":
        message = input_json.get("message")
        return Script([(0.0, str(message))] if message else [], 0.3, int(input_json["code"]))
    if action == "sleep":
        seconds = float(input_json.get("seconds", 1))
        lines = [(float(t), f"sleep: {t}s elapsed") for t in range(1, int(seconds) + 1)]
        lines.append((seconds, evaluation({"slept": input_json.get("seconds")})))
        return Script(lines, seconds + 0.05, 0)
    if action == "spam":
        count, width = int(input_json.get("lines", 0)), int(input_json.get("width", 80))
        seconds, burst = float(input_json.get("seconds", 0)), int(input_json.get("burst", 0))
        # ``count`` lines spread over ``seconds``, then ``burst`` more at once.
        lines = [
            (min(seconds, seconds * i / max(count, 1)), (f"{i:08d} " + "x" * width)[:width])
            for i in range(count + burst)
        ]
        lines.append((seconds, evaluation({"lines": count + burst, "width": width})))
        return Script(lines, seconds + 0.3, 0)
    if action == "oom":
        return Script([(0.0, "allocating")], 0.3, 137, detail="OOMKilled")
    return Script([(0.0, evaluation({}))], 0.3, 0)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class _Handler(BaseHTTPRequestHandler):
    simulator: AciSimulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", "sim")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str, **headers: str) -> None:
        self._send(status, {"error": {"code": code, "message": message}}, headers)

    def _gate(self) -> bool:
        sim = self.simulator
        length = int(self.headers.get("Content-Length") or 0)
        self.body = json.loads(self.rfile.read(length)) if length else None
        with sim.lock:
            sim.requests.append(f"{self.command} {self.path.split('?')[0]}")
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._error(401, "AuthenticationFailed", "no valid bearer token")
                return False
            if sim.unavailable:
                self._error(503, "ServiceUnavailable", "the service is unavailable")
                return False
            if sim.throttle > 0:
                sim.throttle -= 1
                self._error(
                    429, "ResourceRequestsThrottled", "too many requests", **{"Retry-After": "0"}
                )
                return False
        return True

    def do_GET(self) -> None:
        if not self._gate():
            return
        sim, path, now = self.simulator, self.path.split("?")[0], time.time()
        if _USAGE.match(path):
            with sim.lock:
                count = len(sim.groups)
            usage = {
                "unit": "Count",
                "currentValue": count,
                "limit": sim.quota_limit,
                "name": {"value": "ContainerGroups", "localizedValue": "Container Groups"},
            }
            return self._send(200, {"value": [usage]})
        match = _GROUP.match(path)
        if not match:
            return self._error(404, "NotFound", path)
        with sim.lock:
            if match["name"] is None:
                return self._send(200, {"value": [sim.view(g, now) for g in sim.groups.values()]})
            group = sim.groups.get(match["name"])
            if group is None:
                return self._error(404, "ResourceNotFound", f"{match['name']} not found")
            if match["container"]:
                sim.log_reads += 1
                return self._send(200, {"content": sim.log(group, now)})
            return self._send(200, sim.view(group, now))

    def do_PUT(self) -> None:
        if not self._gate():
            return
        sim = self.simulator
        match = _GROUP.match(self.path.split("?")[0])
        if not match or not match["name"]:
            return self._error(404, "NotFound", self.path)
        body = self.body or {}
        props = body.get("properties", {})
        secret = (props.get("volumes") or [{}])[0].get("secret", {}).get("input.json", "")
        try:
            data = json.loads(base64.b64decode(secret)) if secret else {}
        except ValueError:
            data = {}
        image = props.get("containers", [{}])[0].get("properties", {}).get("image", "")
        with sim.lock:
            if sim.refuse_create is not None:
                status, code = sim.refuse_create
                return self._error(status, code, "simulated: the container group was refused")
            existed = match["name"] in sim.groups
            sim.created.append(body)
            failure = None
            if image in sim.pull_error_images or "*" in sim.pull_error_images:
                failure = f'Failed to pull image "{image}": InaccessibleImage'
            elif sim.fail_provisioning:
                failure = "Provisioning failed: the subnet has no free addresses"
            group = Group(
                match["name"], body, time.time(), script_for(data), sim.start_delay_s, failure
            )
            if not existed:
                sim.groups[match["name"]] = group
            view = sim.view(sim.groups[match["name"]], time.time())
        self._send(200 if existed else 201, view)

    def do_DELETE(self) -> None:
        if not self._gate():
            return
        sim = self.simulator
        match = _GROUP.match(self.path.split("?")[0])
        name = match["name"] if match else None
        with sim.lock:
            group = sim.groups.pop(name, None) if name else None
            if group is None:
                return self._send(204)
            sim.deleted.append(group.name)
            view = sim.view(group, time.time())
        self._send(200, view)
