"""Run one adapter container on a Docker engine, with limits, and report what happened.

Docker SDK exceptions stop here: callers see ImageNotFound, BackendUnavailable or BackendError.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

from shared.errors import BackendError, BackendUnavailable, ImageNotFound
from shared.policy import Resources

logger = logging.getLogger(__name__)

INPUT_DIR = "/sandbox/input"
INPUT_PATH = f"{INPUT_DIR}/input.json"
LABEL_RUN = "sandbox-runner.run-id"
LABEL_ATTEMPT = "sandbox-runner.attempt"
SANDBOX_USER = "65534:65534"

LineSink = Callable[[str, bytes], None]


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


@dataclass(slots=True)
class ContainerOutcome:
    """What the container did: exit code, OOM, timeout and resource figures."""

    exit_code: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
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
            return docker.DockerClient(base_url=base_url, timeout=timeout)
        return docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        raise BackendUnavailable(f"Docker engine unreachable: {exc}") from exc


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return BackendUnavailable(f"Docker engine unreachable while {what}")
    if isinstance(exc, docker.errors.APIError) and exc.status_code and exc.status_code >= 500:
        return BackendError(f"Docker engine error while {what}: {exc.explanation}")
    return BackendError(f"Docker failed while {what}: {exc}")


def resolve_image(client: docker.DockerClient, ref: str, pull_timeout_s: int = 120) -> ImageInfo:
    """Find ``ref`` on the engine, pulling it if absent; raise ImageNotFound if neither works."""
    pulled = False
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        try:
            image = client.images.pull(ref)
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
    digests = image.attrs.get("RepoDigests") or []
    return ImageInfo(image_id=image.id, digest=digests[0] if digests else image.id, pulled=pulled)


class _LineSplitter:
    """Cut a byte stream into lines, cutting over-long lines so one line never fills memory."""

    def __init__(self, stream: str, sink: LineSink, max_line_bytes: int) -> None:
        self.stream, self.sink, self.max = stream, sink, max_line_bytes
        self.buf = b""

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while True:
            cut = self.buf.find(b"\n")
            if cut == -1:
                break
            line, self.buf = self.buf[:cut], self.buf[cut + 1 :]
            self._emit(line)
        while len(self.buf) >= self.max:
            self._emit(self.buf[: self.max])
            self.buf = self.buf[self.max :]

    def _emit(self, line: bytes) -> None:
        for start in range(0, max(len(line), 1), self.max):
            self.sink(self.stream, line[start : start + self.max])

    def close(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = b""


def run_container(
    client: docker.DockerClient,
    spec: ContainerSpec,
    sink: LineSink,
    heartbeat: Callable[[], bool] = lambda: True,
    heartbeat_interval_s: float = 5.0,
    max_line_bytes: int = 16 * 1024,
) -> ContainerOutcome:
    """Run the container to its end (or its wall limit) and return the outcome.

    ``sink(stream, raw_line)`` gets every stdout/stderr line as it is printed, from another
    thread. ``heartbeat()`` is called every ``heartbeat_interval_s``; when it returns False the
    attempt lost its lease and the container is killed.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"sandbox-{spec.run_id}-"))
    container = None
    outcome = ContainerOutcome()
    try:
        _remove_stale(client, spec.run_id)
        # The container user is not root: the input must be world-readable, and only that.
        workdir.chmod(0o755)
        (workdir / "input.json").write_bytes(spec.input_json)
        (workdir / "input.json").chmod(0o644)
        container = _create(client, spec, workdir)
        outcome.container_id = container.id
        outcome.limits = _limits_of(container)
        stream = client.api.attach(
            container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True
        )
        reader = threading.Thread(
            target=_pump,
            args=(stream, sink, max_line_bytes),
            name=f"logs-{spec.run_id}",
            daemon=True,
        )
        reader.start()
        started = time.monotonic()
        container.start()
        stats = _StatsSampler(client, container.id)
        stats.start()
        outcome.timed_out = _wait(
            container, spec.resources.timeout_s, heartbeat, heartbeat_interval_s, started
        )
        outcome.duration_s = time.monotonic() - started
        reader.join(timeout=10)
        stats.stop()
        state = client.api.inspect_container(container.id)["State"]
        outcome.exit_code = state.get("ExitCode")
        outcome.oom_killed = bool(state.get("OOMKilled"))
        outcome.cpu_seconds = stats.cpu_seconds
        outcome.peak_memory_bytes = stats.peak_memory_bytes
        outcome.stats_samples = stats.samples
        return outcome
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(f"image {spec.image_id} disappeared from the Docker engine") from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise _translate(exc, f"running {spec.run_id}") from exc
    finally:
        if container is not None:
            _remove(container)
        shutil.rmtree(workdir, ignore_errors=True)


def _create(client: docker.DockerClient, spec: ContainerSpec, workdir: Path) -> Any:
    res = spec.resources
    return client.containers.create(
        spec.image_id,
        name=f"sandbox-{spec.run_id}-{spec.attempt}",
        environment={
            "SANDBOX_RUN_ID": spec.run_id,
            "SANDBOX_METHOD_ID": spec.method_id,
            "SANDBOX_ATTEMPT": str(spec.attempt),
            "SANDBOX_INPUT_PATH": INPUT_PATH,
        },
        labels={LABEL_RUN: spec.run_id, LABEL_ATTEMPT: str(spec.attempt)},
        mounts=[Mount(INPUT_DIR, str(workdir), type="bind", read_only=True)],
        user=SANDBOX_USER,
        read_only=True,
        tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={spec.tmpfs_size_mb}m"},
        network_mode="none",
        nano_cpus=int(res.cpu * 1e9),
        mem_limit=f"{res.memory_mb}m",
        # Swap equal to memory means no swap: an adapter over its limit is OOM-killed, not slowed.
        memswap_limit=f"{res.memory_mb}m",
        pids_limit=spec.pids_limit,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        stdin_open=False,
        tty=False,
        detach=True,
    )


def _limits_of(container: Any) -> dict[str, Any]:
    host = container.attrs["HostConfig"]
    return {
        "nanoCpus": host.get("NanoCpus"),
        "memoryBytes": host.get("Memory"),
        "memorySwapBytes": host.get("MemorySwap"),
        "pidsLimit": host.get("PidsLimit"),
        "networkMode": host.get("NetworkMode"),
        "readOnlyRootfs": host.get("ReadonlyRootfs"),
    }


def _pump(stream: Any, sink: LineSink, max_line_bytes: int) -> None:
    splitters = {
        "stdout": _LineSplitter("stdout", sink, max_line_bytes),
        "stderr": _LineSplitter("stderr", sink, max_line_bytes),
    }
    try:
        for out, err in stream:
            if out:
                splitters["stdout"].feed(out)
            if err:
                splitters["stderr"].feed(err)
    except Exception:  # the engine closing the stream early must not lose what we have
        logger.warning("log stream ended early", exc_info=True)
    finally:
        for splitter in splitters.values():
            splitter.close()


def _wait(
    container: Any, timeout_s: int, heartbeat: Callable[[], bool], interval_s: float, started: float
) -> bool:
    """Wait for the container to exit; kill it at the wall limit. Return True if it timed out."""
    while True:
        remaining = timeout_s - (time.monotonic() - started)
        if remaining <= 0:
            _kill(container)
            return True
        try:
            container.wait(timeout=min(remaining, interval_s))
            return False
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if isinstance(exc, requests.exceptions.ConnectionError) and not _is_timeout(exc):
                raise
        if not heartbeat():
            logger.warning("lease lost; killing container %s", container.id)
            _kill(container)
            raise BackendError("the executor lost its lease on the run")


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


def _remove_stale(client: docker.DockerClient, run_id: str) -> None:
    """Remove containers left by earlier attempts of this run (a crashed executor's)."""
    for old in client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}):
        _remove(old)


def remove_containers_of(client: docker.DockerClient, run_ids: set[str] | None = None) -> int:
    """Remove sandbox containers whose run is in ``run_ids`` (all of ours if None)."""
    removed = 0
    for container in client.containers.list(all=True, filters={"label": LABEL_RUN}):
        if run_ids is None or container.labels.get(LABEL_RUN) in run_ids:
            _remove(container)
            removed += 1
    return removed


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
