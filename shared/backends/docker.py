"""Run one adapter container on a Docker engine, with limits, and report what happened.

Docker SDK exceptions stop here: callers see ImageNotFound, BackendUnavailable or BackendError.
"""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig, Mount, Ulimit

from shared.backends import engine_http
from shared.errors import BackendError, BackendUnavailable, ImageNotFound
from shared.policy import Resources

if TYPE_CHECKING:
    from shared.backends.egress import EgressAttachment

logger = logging.getLogger(__name__)

INPUT_DIR = "/sandbox/input"
INPUT_PATH = f"{INPUT_DIR}/input.json"
LABEL_RUN = "sandbox-runner.run-id"
# Which fleet owns a container: a reconciler only ever removes its own fleet's containers, so
# two fleets (staging and production, or parallel test fleets) can share one engine.
LABEL_FLEET = "sandbox-runner.fleet"
LABEL_ATTEMPT = "sandbox-runner.attempt"
SANDBOX_USER = "65534:65534"
OUTPUT_DIR = "/sandbox/out"

# Receives (stream, lines): a batch of raw lines without their newlines, in order.
LineSink = Callable[[str, list[bytes]], None]


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An image as the engine knows it: the immutable id we run and the digest we record."""

    image_id: str
    digest: str
    pulled: bool


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything needed to start one attempt of one run."""

    run_id: str
    attempt: int
    method_id: str
    image_id: str
    input_json: bytes
    resources: Resources
    pids_limit: int = 256
    tmpfs_size_mb: int = 64
    fleet: str = "sandbox-runner"
    # The registry digest checked at provisioning (``repo@sha256:...``), to pull by if needed.
    image_digest: str = ""
    nofile_limit: int = 1024
    # A run the policy allows egress: its internal network and proxy (shared/backends/egress.py).
    egress: EgressAttachment | None = None


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt's container just started, with its output attached from the first byte."""

    container: Any
    # None when the container already existed (a redelivered task raced us): its output is
    # read from the engine's log instead, from the first line.
    output: http.client.HTTPResponse | None


@dataclass(slots=True)
class ContainerOutcome:
    """What the container did: exit code, OOM, timeout and resource figures."""

    exit_code: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    cancelled: bool = False
    stopped: bool = False
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None
    duration_s: float = 0.0
    container_id: str | None = None
    stats_samples: int = 0
    limits: dict[str, Any] = field(default_factory=dict)


def connect(base_url: str | None = None, timeout: int = 30) -> docker.DockerClient:
    """Return a client for the engine (DOCKER_HOST semantics when ``base_url`` is None)."""
    try:
        if base_url:
            client = docker.DockerClient(base_url=base_url, timeout=timeout)
        else:
            client = docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        raise BackendUnavailable(f"Docker engine unreachable: {exc}") from exc
    # requests otherwise re-reads every *_PROXY variable of the environment on each engine call
    # (a scan of os.environ per request: the largest CPU cost of the executor in a profile); an
    # engine is reached over its socket or with its own TLS settings, never through a proxy.
    client.api.trust_env = False
    try:
        engine_http.for_client(client)  # an engine it cannot reach fails here, not in a run
    except docker.errors.DockerException as exc:
        raise BackendUnavailable(str(exc)) from exc
    return client


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return BackendUnavailable(f"Docker engine unreachable while {what}")
    if isinstance(exc, docker.errors.APIError) and exc.status_code and exc.status_code >= 500:
        return BackendError(f"Docker engine error while {what}: {exc.explanation}")
    return BackendError(f"Docker failed while {what}: {exc}")


# Digest references the engine already resolved in this process: what such a reference names
# never changes, so a second look-up only costs an engine call on every run's path. Should the
# image leave the engine meanwhile, the executor pulls it by this digest and checks its id.
_PINNED: dict[str, ImageInfo] = {}
_PINNED_MAX = 256


def resolve_image(client: docker.DockerClient, ref: str, pull_timeout_s: int = 120) -> ImageInfo:
    """Find ``ref`` on the engine, pulling it if absent; raise ImageNotFound if neither works."""
    known = _PINNED.get(ref)
    if known is not None:
        return known
    info = _resolve_image(client, ref)
    if "@sha256:" in ref:
        if len(_PINNED) >= _PINNED_MAX:
            _PINNED.clear()
        _PINNED[ref] = replace(info, pulled=False)
    return info


def _resolve_image(client: docker.DockerClient, ref: str) -> ImageInfo:
    pulled = False
    try:
        image = engine_http.for_client(client).inspect_image(ref)
    except docker.errors.ImageNotFound:
        try:
            image = client.images.pull(ref).attrs
            pulled = True
        except (docker.errors.APIError, docker.errors.ImageNotFound) as exc:
            reason = getattr(exc, "explanation", None) or str(exc)
            raise ImageNotFound(
                f"image {ref} is not on the Docker engine and could not be pulled ({reason}); "
                "build it (make images) or push it to a registry the engine can reach"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise _translate(exc, f"pulling {ref}") from exc
    except (requests.exceptions.RequestException, docker.errors.APIError) as exc:
        raise _translate(exc, f"looking up {ref}") from exc
    return ImageInfo(image_id=image["Id"], digest=_repo_digest(ref, image), pulled=pulled)


def _repo_digest(ref: str, image: dict[str, Any]) -> str:
    """The registry digest to record: the reference itself when pinned, else the repo's own."""
    digests = image.get("RepoDigests") or []
    if "@sha256:" in ref and ref in digests:
        return ref
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name.rsplit(":", 1)[0]
    for digest in digests:
        if digest.split("@", 1)[0] == name:
            return digest
    return digests[0] if digests else image["Id"]


class _LineSplitter:
    """Cut a byte stream into lines, cutting over-long lines so one line never fills memory.

    Lines go to the sink in batches (all the complete lines of one chunk), so the consumer can
    redact a block at a time instead of paying per-call costs for every line.
    """

    def __init__(self, stream: str, sink: LineSink, max_line_bytes: int) -> None:
        self.stream, self.sink, self.max = stream, sink, max_line_bytes
        self.buf = b""

    def feed(self, chunk: bytes) -> None:
        parts = (self.buf + chunk).split(b"\n")
        self.buf = parts.pop()
        lines: list[bytes] = []
        for line in parts:
            self._cut(line, lines)
        while len(self.buf) >= self.max:
            lines.append(self.buf[: self.max])
            self.buf = self.buf[self.max :]
        if lines:
            self.sink(self.stream, lines)

    def _cut(self, line: bytes, into: list[bytes]) -> None:
        if len(line) <= self.max:
            into.append(line)
            return
        into.extend(line[start : start + self.max] for start in range(0, len(line), self.max))

    def close(self) -> None:
        if self.buf:
            lines: list[bytes] = []
            self._cut(self.buf, lines)
            self.buf = b""
            self.sink(self.stream, lines)


class Heartbeat(StrEnum):
    """What the executor wants after renewing its lease."""

    CONTINUE = "continue"
    KILL = "kill"  # the run was cancelled: stop the container
    STOP = "stop"  # the run broke a limit the executor enforces (output): stop, then finalize
    DETACH = "detach"  # another executor took the run over: leave the container to it


class LeaseLost(BackendError):
    """Another executor owns the run now; this one stopped following its container."""


def container_name(run_id: str, attempt: int) -> str:
    """Return the one name an attempt's container can have (a second create conflicts)."""
    return f"sandbox-{run_id}-{attempt}"


def find_container(client: docker.DockerClient, run_id: str, attempt: int) -> Any | None:
    """Return the container of this attempt, or None if it was never created or is gone."""
    try:
        return client.containers.get(container_name(run_id, attempt))
    except docker.errors.NotFound:
        return None
    except (requests.exceptions.RequestException, docker.errors.APIError) as exc:
        raise _translate(exc, f"looking for the container of {run_id}") from exc


def start(client: docker.DockerClient, spec: ContainerSpec, first_attempt: bool = False) -> Started:
    """Create the attempt's container, attach to its output and start it.

    Earlier attempts' leftovers are removed first. If the attempt's container already exists (a
    redelivered task raced us) it is returned as is, unattached: never a second container for one
    attempt.
    """
    workdir = _input_dir(spec.run_id, spec.attempt)
    try:
        if not first_attempt:  # a first attempt has no predecessor to clean up after
            _remove_other_attempts(client, spec.run_id, spec.attempt)
        workdir.mkdir(mode=0o755, parents=True, exist_ok=True)
        # The container user is not root: the input must be world-readable, and only that.
        workdir.chmod(0o755)
        (workdir / "input.json").write_bytes(spec.input_json)
        (workdir / "input.json").chmod(0o644)
        try:
            container = _create(client, spec, workdir)
        except docker.errors.ImageNotFound:
            # This host lacks the image (another host provisioned it, or it was evicted since):
            # fetch exactly what was checked, by its registry digest, never by a tag.
            if "@sha256:" not in spec.image_digest:
                raise
            pulled = client.images.pull(spec.image_digest)
            if pulled.id != spec.image_id:
                raise ImageNotFound(
                    f"{spec.image_digest} pulled as {pulled.id}, not the {spec.image_id} that was "
                    "checked at provisioning"
                ) from None
            container = _create(client, spec, workdir)
        except docker.errors.APIError as exc:
            if exc.status_code in (400, 409) and "already in use" in str(exc):
                existing = find_container(client, spec.run_id, spec.attempt)
                if existing is not None:
                    return Started(existing, None)
            raise
        engine = engine_http.for_client(client)
        # Attached before the start, so not one byte is printed unseen. The attach, not the
        # engine's log, carries the output: following a json-file log loses lines (or stops)
        # where the engine rotates it, here from the first 128 MB (moby#37646 and its kin).
        output = engine.attach(container.id)
        try:
            engine.start(container.id)
        except BaseException:
            output.close()
            raise
        return Started(container, output)
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(f"image {spec.image_id} is no longer on the Docker engine") from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise _translate(exc, f"starting {spec.run_id}") from exc


def follow(
    client: docker.DockerClient,
    container: Any,
    timeout_s: int,
    sink: LineSink,
    heartbeat: Callable[[], Heartbeat] = lambda: Heartbeat.CONTINUE,
    heartbeat_interval_s: float = 2.0,
    max_line_bytes: int = 16 * 1024,
    started_at: float | None = None,
    output: http.client.HTTPResponse | None = None,
) -> ContainerOutcome:
    """Stream a started container's output to ``sink`` until it exits; enforce its wall limit.

    Output comes from ``output``, the attach ``start`` opened, when this process started the
    container. Otherwise it is read from the engine's log from its first line, so following a
    container again after an executor died replays everything (the caller skips what it
    stored); that replay shares the engine's json-file limits (see ``start``). The wall limit
    counts from the container's own start time (``started_at`` when the caller just started it,
    else read from the engine), not from when this call began. Raises LeaseLost when
    ``heartbeat`` says another executor owns the run (the container is left running).
    """
    outcome = ContainerOutcome(container_id=container.id)
    try:
        if started_at is None:  # re-attaching: the container's own clock says when it began
            container.reload()
            started_at = _started_epoch(container)
        started = started_at
        reader = threading.Thread(
            target=_pump,
            args=(client, container.id, sink, max_line_bytes, output),
            name=f"logs-{container.name}",
            daemon=True,
        )
        reader.start()
        # Sampled only once the container outlives a first short wait: the engine rarely has a
        # sample for a run shorter than that, and opening the stream costs the engine and us.
        stats = _StatsSampler(client, container.id)
        verdict = _wait(
            container, timeout_s, heartbeat, heartbeat_interval_s, started, on_running=stats.start
        )
        if verdict is Heartbeat.DETACH:
            raise LeaseLost("another executor took the run over")
        outcome.timed_out = verdict == "timeout"
        outcome.cancelled = verdict is Heartbeat.KILL
        outcome.stopped = verdict is Heartbeat.STOP
        reader.join(timeout=10)
        stats.stop()
        attrs = engine_http.for_client(client).inspect_container(container.id)
        outcome.limits = _limits_of(attrs)
        state = attrs["State"]
        outcome.exit_code = state.get("ExitCode")
        outcome.oom_killed = bool(state.get("OOMKilled"))
        outcome.duration_s = max(0.0, _finished_epoch(state) - started)
        outcome.cpu_seconds = stats.cpu_seconds
        outcome.peak_memory_bytes = stats.peak_memory_bytes
        outcome.stats_samples = stats.samples
        return outcome
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise _translate(exc, f"following {container.name}") from exc


def run_container(
    client: docker.DockerClient,
    spec: ContainerSpec,
    sink: LineSink,
    heartbeat: Callable[[], Heartbeat] = lambda: Heartbeat.CONTINUE,
    heartbeat_interval_s: float = 2.0,
    max_line_bytes: int = 16 * 1024,
) -> ContainerOutcome:
    """Start, follow and remove one container: the whole life of an attempt in one call."""
    started = start(client, spec)
    try:
        return follow(
            client,
            started.container,
            spec.resources.timeout_s,
            sink,
            heartbeat,
            heartbeat_interval_s,
            max_line_bytes,
            output=started.output,
        )
    finally:
        remove(client, spec.run_id, spec.attempt)


def remove(
    client: docker.DockerClient, run_id: str, attempt: int, egress: bool | None = None
) -> None:
    """Remove an attempt's container, input directory and egress (gone already is fine).

    ``egress`` says whether the attempt had egress parts (its plan knows); None looks it up.
    """
    if egress is None:
        container = find_container(client, run_id, attempt)
        if container is not None:
            _remove(container)
        egress = container is None or container.attrs["HostConfig"].get("NetworkMode") != "none"
    else:  # the caller knows: no inspect, the container goes by its name
        try:
            engine_http.for_client(client).remove_container(
                container_name(run_id, attempt), force=True
            )
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException):
            logger.warning("could not remove the container of %s", run_id, exc_info=True)
    shutil.rmtree(_input_dir(run_id, attempt), ignore_errors=True)
    if egress:
        # That module imports this one: a top-level import would loop.
        from shared.backends import egress as egress_parts

        egress_parts.remove(client, run_id, attempt)


def remove_labelled(container: Any) -> None:
    """Remove a container found by its labels (whatever its name) and its input directory."""
    _remove(container)
    run_id = labels_of(container).get(LABEL_RUN, "")
    attempt = labels_of(container).get(LABEL_ATTEMPT, "")
    if run_id and attempt.isdigit():
        shutil.rmtree(_input_dir(run_id, int(attempt)), ignore_errors=True)


def _input_dir(run_id: str, attempt: int) -> Path:
    # Deterministic, so an executor that takes a run over finds (and later removes) it.
    return Path(tempfile.gettempdir()) / "sandbox-runner-input" / f"{run_id}-{attempt}"


def _started_epoch(container: Any) -> float:
    return _parse_docker_time(container.attrs["State"].get("StartedAt")) or time.time()


def _finished_epoch(state: dict[str, Any]) -> float:
    return _parse_docker_time(state.get("FinishedAt")) or time.time()


def _parse_docker_time(value: str | None) -> float | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker prints nanoseconds; datetime takes microseconds.
    head, _, rest = value.partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6]
    stamp = f"{head}.{fraction or '0'}+00:00"
    return datetime.fromisoformat(stamp).timestamp()


def _create(client: docker.DockerClient, spec: ContainerSpec, workdir: Path) -> Any:
    res = spec.resources
    return _create_container(
        client,
        spec.image_id,
        name=container_name(spec.run_id, spec.attempt),
        environment={
            "SANDBOX_RUN_ID": spec.run_id,
            "SANDBOX_METHOD_ID": spec.method_id,
            "SANDBOX_ATTEMPT": str(spec.attempt),
            "SANDBOX_INPUT_PATH": INPUT_PATH,
            **(spec.egress.environment if spec.egress else {}),
        },
        labels={
            LABEL_RUN: spec.run_id,
            LABEL_ATTEMPT: str(spec.attempt),
            LABEL_FLEET: spec.fleet,
        },
        mounts=[Mount(INPUT_DIR, str(workdir), type="bind", read_only=True)],
        user=SANDBOX_USER,
        read_only=True,
        # Writable places are size-limited tmpfs only (RAM, charged to the memory limit): /tmp
        # and the output dir; the root filesystem is read-only, the input a read-only bind.
        tmpfs={
            "/tmp": f"rw,noexec,nosuid,nodev,size={spec.tmpfs_size_mb}m",
            OUTPUT_DIR: f"rw,noexec,nosuid,nodev,size={spec.tmpfs_size_mb}m,uid=65534,gid=65534,"
            "mode=0700",
        },
        **(spec.egress.container_options() if spec.egress else {"network_mode": "none"}),
        nano_cpus=int(res.cpu * 1e9),
        mem_limit=f"{res.memory_mb}m",
        # Swap equal to memory means no swap: an adapter over its limit is OOM-killed, not slowed.
        memswap_limit=f"{res.memory_mb}m",
        pids_limit=spec.pids_limit,
        cap_drop=["ALL"],
        # The engine's default seccomp profile applies because none is named (never
        # "seccomp=unconfined"); no-new-privileges makes setuid binaries useless.
        security_opt=["no-new-privileges"],
        ulimits=[Ulimit(name="nofile", soft=spec.nofile_limit, hard=spec.nofile_limit)],
        privileged=False,
        ipc_mode="private",
        stdin_open=False,
        tty=False,
        detach=True,
        # The engine's own copy of the output is what an executor taking a run over replays;
        # bounded so a run printing without end cannot fill the host's disk.
        log_config=LogConfig(type="json-file", config={"max-size": "128m", "max-file": "4"}),
    )


def _create_container(client: docker.DockerClient, image: str, **kwargs: Any) -> Any:
    """``client.containers.create`` without the inspect it makes to return a full model.

    One engine call fewer per run: nothing reads the model's attributes before the container is
    followed, and ``follow`` inspects once at the end. The options go through the SDK's own
    argument conversion (private helpers of docker-py, pinned in requirements/) so every option
    means the same; the call itself goes over the lean client (engine_http).
    """
    from docker.models.containers import _create_container_args
    from docker.utils.utils import format_environment

    api = client.api
    kwargs.update(image=image, command=None, version=api._version)
    args = _create_container_args(kwargs)
    name = args.pop("name")
    environment = args.pop("environment", None)
    if isinstance(environment, dict):
        environment = format_environment(environment)
    # What the SDK's create_container does with ~/.docker/config.json proxy settings.
    environment = api._proxy_configs.inject_proxy_environment(environment) or None
    config = api.create_container_config(environment=environment, **args)
    created = engine_http.for_client(client).create_container(
        name, {key: value for key, value in config.items() if value is not None}
    )
    return client.containers.prepare_model(
        {"Id": created, "Name": f"/{name}", "Config": {"Labels": kwargs.get("labels")}}
    )


def _limits_of(attrs: dict[str, Any]) -> dict[str, Any]:
    host = attrs["HostConfig"]
    return {
        "nanoCpus": host.get("NanoCpus"),
        "memoryBytes": host.get("Memory"),
        "memorySwapBytes": host.get("MemorySwap"),
        "pidsLimit": host.get("PidsLimit"),
        "networkMode": host.get("NetworkMode"),
        "readOnlyRootfs": host.get("ReadonlyRootfs"),
        "capDrop": host.get("CapDrop"),
        "securityOpt": host.get("SecurityOpt"),
        "ulimits": host.get("Ulimits"),
    }


def _pump(
    client: docker.DockerClient,
    container_id: str,
    sink: LineSink,
    max_line_bytes: int,
    output: http.client.HTTPResponse | None,
) -> None:
    splitters = {
        1: _LineSplitter("stdout", sink, max_line_bytes),
        2: _LineSplitter("stderr", sink, max_line_bytes),
    }
    try:
        if output is None:
            output = engine_http.for_client(client).stream(
                "GET",
                f"/containers/{container_id}/logs",
                {"stdout": 1, "stderr": 1, "follow": 1, "timestamps": 0},
            )
        for stream_id, data in _frames(output):
            splitter = splitters.get(stream_id)
            if splitter is not None:
                splitter.feed(data)
    except Exception:  # the engine closing the stream early must not lose what we have
        logger.warning("log stream ended early", exc_info=True)
    finally:
        for splitter in splitters.values():
            splitter.close()


def _frames(response: http.client.HTTPResponse) -> Iterator[tuple[int, bytes]]:
    """Yield (stream id, bytes) from an engine stream of multiplexed frames, to its end.

    Attach and logs both send these frames (1 = stdout, 2 = stderr); the SDK's ``logs()`` would
    drop the stream id. Whatever the socket holds is read at once and consecutive frames of one
    stream are joined: a printer's frames are a few KiB each, and every batch the redactor is
    handed costs it a fixed amount on top of its bytes.
    """
    buf = bytearray()
    try:
        while chunk := response.read1(_READ_BYTES):
            buf += chunk
            pos, end = 0, len(buf)
            stream_id = 0
            parts: list[bytes] = []
            while end - pos >= 8:
                sid, length = _FRAME_HEADER.unpack_from(buf, pos)
                if end - pos - 8 < length:
                    break  # the rest of this frame is still on its way
                if sid != stream_id and parts:
                    yield stream_id, b"".join(parts)
                    parts = []
                stream_id = sid
                if length:
                    parts.append(bytes(buf[pos + 8 : pos + 8 + length]))
                pos += 8 + length
            if parts:
                yield stream_id, b"".join(parts)
            del buf[:pos]
    finally:
        response.close()


_FRAME_HEADER = struct.Struct(">BxxxL")
_READ_BYTES = 1 << 20


def _wait(
    container: Any,
    timeout_s: int,
    heartbeat: Callable[[], Heartbeat],
    interval_s: float,
    started: float,
    on_running: Callable[[], None] | None = None,
    first_wait_s: float = 0.25,
) -> Heartbeat | str:
    """Wait for the container to exit, renewing the lease; kill it at the wall limit.

    ``on_running`` is called once if the container is still running after ``first_wait_s``.
    Returns "exited", "timeout", Heartbeat.KILL (cancelled and killed), Heartbeat.STOP (killed
    for a limit the executor enforces) or Heartbeat.DETACH.
    """
    first = on_running is not None
    engine = engine_http.for_client(container.client)
    while True:
        remaining = timeout_s - (time.time() - started)
        if remaining <= 0:
            _kill(container)
            return "timeout"
        try:
            step = min(remaining, first_wait_s if first else interval_s)
            engine.wait(container.id, timeout=max(0.05, step))
            return "exited"
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if isinstance(exc, requests.exceptions.ConnectionError) and not _is_timeout(exc):
                raise
        if first:
            assert on_running is not None
            on_running()
            first = False
            continue
        verdict = heartbeat()
        if verdict in (Heartbeat.KILL, Heartbeat.STOP):
            _kill(container)
            return verdict
        if verdict is Heartbeat.DETACH:
            return verdict


def _is_timeout(exc: Exception) -> bool:
    # requests reports a read timeout on a streaming wait as a ConnectionError in some versions.
    return "timed out" in str(exc).lower()


def _kill(container: Any) -> None:
    try:
        container.kill()
    except docker.errors.APIError:
        pass  # it exited on its own between the check and the kill
    try:
        container.wait(timeout=30)
    except requests.exceptions.RequestException:
        logger.warning("container %s did not stop after kill", container.id)


def _remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except (docker.errors.APIError, requests.exceptions.RequestException):
        logger.warning("could not remove container %s", container.id, exc_info=True)


def list_labelled(client: docker.DockerClient, filters: dict[str, Any]) -> list[Any]:
    """Return the containers ``filters`` selects, as the list call describes them.

    Sparse: without it the SDK inspects each listed container, one engine call each, and one
    removed between the list and its inspect failed the whole listing. ``labels_of`` reads them.
    """
    return list(client.containers.list(all=True, sparse=True, filters=filters))


def labels_of(container: Any) -> dict[str, str]:
    """Return a container's labels, from a listed (sparse) or an inspected model."""
    attrs = container.attrs
    labels = attrs.get("Labels") if "Labels" in attrs else (attrs.get("Config") or {}).get("Labels")
    return labels or {}


def _remove_other_attempts(client: docker.DockerClient, run_id: str, attempt: int) -> None:
    """Remove containers left by earlier attempts of this run (a dead executor's)."""
    for old in list_labelled(client, {"label": f"{LABEL_RUN}={run_id}"}):
        if labels_of(old).get(LABEL_ATTEMPT) != str(attempt):
            _remove(old)


def list_sandbox_containers(client: docker.DockerClient, fleet: str) -> list[tuple[str, int, Any]]:
    """Return (run id, attempt, container) for every container of this fleet."""
    found = []
    try:
        for container in list_labelled(client, {"label": [LABEL_RUN, f"{LABEL_FLEET}={fleet}"]}):
            labels = labels_of(container)
            try:
                attempt = int(labels.get(LABEL_ATTEMPT, "0"))
            except ValueError:
                attempt = 0
            found.append((labels[LABEL_RUN], attempt, container))
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise _translate(exc, "listing sandbox containers") from exc
    return found


class _StatsSampler:
    """Follow the engine's stats stream for peak memory and CPU time."""

    def __init__(self, client: docker.DockerClient, container_id: str) -> None:
        self.client, self.container_id = client, container_id
        self.peak_memory_bytes: int | None = None
        self.cpu_seconds: float | None = None
        self.samples = 0
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="stats")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            # The stream's first sample waits for the engine's next collection tick (up to a
            # second): a one-shot read first gives a run that ends before it its figures.
            self._take(self.client.api.stats(self.container_id, stream=False, one_shot=True))
            self._stream = self.client.api.stats(self.container_id, stream=True, decode=True)
            for sample in self._stream:
                self._take(sample)
        except Exception:  # stats are best effort: a container that exits ends the stream
            logger.debug("stats stream ended", exc_info=True)

    def _take(self, sample: dict[str, Any]) -> None:
        memory = sample.get("memory_stats") or {}
        peak = memory.get("max_usage") or memory.get("usage")
        if peak:
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, int(peak))
        cpu = (sample.get("cpu_stats") or {}).get("cpu_usage", {}).get("total_usage")
        if cpu:
            self.cpu_seconds = max(self.cpu_seconds or 0.0, cpu / 1e9)
        self.samples += 1

    def stop(self) -> None:
        # The stream ends on its own once the container is removed, which ends the daemon thread;
        # joining it would add a stats interval to every run. What was sampled is already here.
        self._stream = None


def dumps_input(data: dict[str, Any]) -> bytes:
    """Serialise a run's input the way the adapter reads it."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
