"""The engine calls on every run's path (create, attach, start, wait, logs, inspect, remove).

They go over http.client, not the SDK: a docker-SDK call costs about 0.8 ms of CPU in requests
and urllib3 (session merging, adapters, connection pools) against about 0.13 ms for http.client on
a kept-alive socket, and at saturation the executor's CPU competes with the engine's for the same
cores.
Everything else (pulls, networks, listings, stats, kills) stays on the SDK.

Errors keep the SDK's contract, so callers handle one set of exceptions: an HTTP error becomes the
docker.errors class the SDK would raise (NotFound, ImageNotFound, APIError with its status code),
a socket timeout a requests ReadTimeout, an unreachable engine a requests ConnectionError.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import weakref
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import docker
import docker.errors
import requests
import requests.exceptions

_BROKEN = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class EngineHTTP:
    """One kept-alive connection per thread to the engine a DockerClient talks to."""

    def __init__(self, client: docker.DockerClient) -> None:
        api = client.api
        self.version = api._version
        self.timeout = float(api.timeout) if api.timeout else None
        self._local = threading.local()
        base = api.base_url
        adapter: Any = getattr(api, "_custom_adapter", None)
        self._unix_path: str | None = None
        self._host = self._port = None
        self._tls: ssl.SSLContext | None = None
        if base == "http+docker://localhost" and hasattr(adapter, "socket_path"):
            self._unix_path = adapter.socket_path
        elif base.startswith(("http://", "https://")):
            parts = urlsplit(base)
            self._host, self._port = parts.hostname, parts.port
            if parts.scheme == "https":
                self._tls = _tls_context(api)
        else:
            # ssh:// and npipe:// engines: the executor runs beside its engine or reaches it
            # over TCP (with TLS); refusing here is clearer than a slow path nobody tests.
            raise docker.errors.DockerException(
                f"the executor reaches its engine over a unix socket or tcp://, not {base}"
            )

    def _new_connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._unix_path is not None:
            return _UnixConnection(self._unix_path, timeout)
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._host or "", self._port, timeout=timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._host or "", self._port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """Make one call; return its decoded JSON body (None when empty); raise as the SDK does."""
        url = f"/v{self.version}{path}"
        if params:
            url = f"{url}?{urlencode(params)}"
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        effective = self.timeout if timeout is None else timeout
        for first_try in (True, False):
            conn, was_open = self._connection(effective)
            try:
                conn.request(method, url, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except OSError as exc:
                self._drop()
                # The engine closed a kept-alive connection while it sat idle: the request never
                # reached it, so one fresh try is safe.
                if first_try and was_open and isinstance(exc, _BROKEN):
                    continue
                raise _transport_error(exc, method, path) from exc
            if response.will_close:
                self._drop()
            if response.status >= 400:
                _raise_api_error(response, data, url)
            return json.loads(data) if data else None
        raise AssertionError("unreachable")

    def _connection(self, timeout: float | None) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        was_open = conn is not None
        if conn is None:
            conn = self._local.conn = self._new_connection(timeout)
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        else:
            conn.timeout = timeout
        return conn, was_open

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    # The calls themselves, named as the engine API names them.

    def create_container(self, name: str, config: dict[str, Any]) -> str:
        return self.request("POST", "/containers/create", {"name": name}, body=config)["Id"]

    def start(self, container: str) -> None:
        self.request("POST", f"/containers/{quote(container)}/start")

    def wait(self, container: str, timeout: float | None) -> dict[str, Any]:
        return self.request("POST", f"/containers/{quote(container)}/wait", timeout=timeout)

    def inspect_container(self, container: str) -> dict[str, Any]:
        return self.request("GET", f"/containers/{quote(container)}/json")

    def remove_container(self, container: str, force: bool = False) -> None:
        self.request("DELETE", f"/containers/{quote(container)}", {"force": int(force), "v": 0})

    def inspect_image(self, image: str) -> dict[str, Any]:
        return self.request("GET", f"/images/{quote(image, safe='/:@')}/json")

    def attach(self, container: str) -> http.client.HTTPResponse:
        """Attach to a container's stdout and stderr as it prints (multiplexed frames).

        Opened before the container starts, it carries every byte from the first. The engine
        copies output to an attached reader as it comes, so a reader slower than its container
        slows the container's writes instead of losing lines.
        """
        return self.stream(
            "POST",
            f"/containers/{quote(container)}/attach",
            {"stream": 1, "stdout": 1, "stderr": 1},
        )

    def stream(self, method: str, path: str, params: dict[str, Any]) -> http.client.HTTPResponse:
        """Open a streaming call on a connection of its own, without a read timeout.

        The caller reads the response to its end and closes it; the connection goes with it.
        """
        conn = self._new_connection(self.timeout)
        url = f"/v{self.version}{path}?{urlencode(params)}"
        try:
            conn.request(method, url)
            sock = conn.sock  # the connection lets go of it when the response is read to close
            response = conn.getresponse()
            data = response.read() if response.status >= 400 else b""
        except OSError as exc:
            conn.close()
            raise _transport_error(exc, method, path) from exc
        if response.status >= 400:
            conn.close()
            _raise_api_error(response, data, url)
        assert sock is not None
        sock.settimeout(None)  # output follows its container for as long as it runs
        # The response holds the socket from here: closing it closes the socket for real.
        conn.sock = None
        sock.close()
        return response


_ENGINES: weakref.WeakKeyDictionary[Any, EngineHTTP] = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def for_client(client: docker.DockerClient) -> EngineHTTP:
    """The lean caller for ``client``'s engine (one per client, made on first use)."""
    engine = _ENGINES.get(client)
    if engine is None:
        with _ENGINES_LOCK:
            engine = _ENGINES.get(client)
            if engine is None:
                engine = _ENGINES[client] = EngineHTTP(client)
    return engine


def _tls_context(api: Any) -> ssl.SSLContext:
    """The TLS settings the SDK was given (CA bundle or not, client certificate)."""
    verify = api.verify
    if verify is False:
        context = ssl._create_unverified_context()
    else:
        context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    cert = api.cert
    if isinstance(cert, tuple):
        context.load_cert_chain(cert[0], cert[1])
    elif cert:
        context.load_cert_chain(cert)
    return context


def _transport_error(exc: OSError, method: str, path: str) -> Exception:
    """The requests exception the SDK raises for this socket error (see the module's docstring)."""
    if isinstance(exc, TimeoutError):
        return requests.exceptions.ReadTimeout(f"engine call {method} {path}")
    if isinstance(exc, _BROKEN):
        return requests.exceptions.ConnectionError(f"engine call {method} {path}")
    return requests.exceptions.ConnectionError(f"engine unreachable for {method} {path}: {exc}")


def _raise_api_error(response: http.client.HTTPResponse, data: bytes, url: str) -> None:
    # Built as the SDK builds it, so NotFound, ImageNotFound and status codes mean the same.
    fake = requests.Response()
    fake.status_code = response.status
    fake.reason = response.reason
    fake.url = url
    fake._content = data
    fake.headers["Content-Type"] = response.getheader("Content-Type", "")
    docker.errors.create_api_error_from_http_exception(requests.HTTPError(response=fake))
