"""Egress proxy: an HTTP forward proxy that lets a sandbox reach only the allowed hosts.

Stdlib only, because this single file is the whole program of the proxy image
(``infra/egress-proxy/Dockerfile`` copies it to ``/opt/egress/egress_proxy.py``); the platform
imports it too, to parse and check the allow list the same way.

One proxy runs per run that the resource policy allows egress (``shared/backends/egress.py``).
It understands the two forms clients use through ``HTTP_PROXY``/``HTTPS_PROXY``:

* ``CONNECT host:port`` (TLS, or any TCP stream): tunnelled when allowed;
* an absolute URI (``GET http://host[:port]/path``): forwarded as one request
  (``Connection: close``) when allowed.

Anything else (origin-form requests, other schemes, user info in the URI, malformed lines) is
refused. Every decision is one JSON line on stdout, which is how the executor learns what the
run tried::

    {"decision": "deny", "host": "evil.example", "port": 443, "method": "CONNECT",
     "time": "2025-01-01T00:00:00.000Z", "denied": 1, "allowed": 0}

``denied``/``allowed`` are running totals, so the last line tells the totals even when the
engine rotated earlier lines away. An allow entry is ``host`` (any port) or ``host:port``;
``[v6]`` or ``[v6]:port`` for IPv6. Names match case-insensitively and exactly (no wildcards, a
trailing dot ignored); an IP literal matches only the same address listed as an address, never a
name that resolves to it. The proxy resolves allowed names itself: the sandbox has no DNS.

Usage: ``python3 egress_proxy.py --allow "api.example.com,10.1.2.3:8080" [--port 3128]``
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO
from urllib.parse import urlsplit

DEFAULT_PORT = 3128
# A request head larger than this is refused: a proxy request needs a line and a few headers.
MAX_HEAD_BYTES = 32 * 1024
HEAD_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
# Beyond this many open client connections new ones get a 503 (the container's pids and
# nofile limits stay far away).
MAX_CLIENTS = 256
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never passed upstream.
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
}


def normalise_host(host: str) -> str | None:
    """Return the canonical text of a host name or IP literal, or None if it is neither.

    Names are lower-cased without a trailing dot; addresses are in ``ipaddress`` form (so
    ``[::0:1]`` and ``::1`` agree). Names that the C resolver would read as an address
    (``127.1``, ``0x7f.1``) are not names: they are refused rather than guessed.
    """
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    name = name.lower()
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    # A last label of digits (or a hex number) is how inet_aton spells an address.
    if labels[-1].isdigit() or re.fullmatch(r"0x[0-9a-f]*", labels[-1]):
        return None
    return name


def parse_authority(text: str, default_port: int | None = None) -> tuple[str, int] | None:
    """Split ``host:port`` (``[v6]:port``) into a normalised host and a port; None if invalid."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = text, None
    if port_text is None:
        if default_port is None:
            return None
        port = default_port
    else:
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        port = int(port_text)
    normal = normalise_host(host)
    if normal is None or not 1 <= port <= 65535:
        return None
    return normal, port


@dataclass(frozen=True)
class Rule:
    """One allow entry: a normalised host and a port (None: any port)."""

    host: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


class AllowList:
    """The hosts a run may reach; everything else is denied."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules = tuple(dict.fromkeys(rules))

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> AllowList:
        """Read a comma-separated list (or a list) of entries; raise ValueError on a bad one."""
        entries = text.split(",") if isinstance(text, str) else list(text)
        rules = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            rule = _parse_rule(entry)
            if rule is None:
                raise ValueError(f"egress allow entry {entry!r} is not a host or host:port")
            rules.append(rule)
        return cls(rules)

    def entries(self) -> list[str]:
        """Return the entries in their canonical text form."""
        return [str(rule) for rule in self.rules]

    def allows(self, host: str, port: int) -> bool:
        """Tell whether ``host`` (a name or IP literal, as requested) on ``port`` is allowed."""
        normal = normalise_host(host)
        if normal is None:
            return False
        return any(r.host == normal and (r.port is None or r.port == port) for r in self.rules)


def _parse_rule(entry: str) -> Rule | None:
    if entry.count(":") > 1 and not entry.startswith("["):
        entry = f"[{entry}]"  # a bare IPv6 address: it cannot carry a port without brackets
    if ":" not in entry or (entry.startswith("[") and entry.endswith("]")):
        host = normalise_host(entry)
        return Rule(host, None) if host else None
    parsed = parse_authority(entry)
    return Rule(*parsed) if parsed else None


@dataclass(frozen=True)
class Target:
    """Where a request wants to go, or why it cannot be understood (``error``)."""

    method: str
    host: str
    port: int | None
    error: str | None = None
    # For an absolute-URI request: the request head rewritten for the origin server.
    head: bytes = b""


def parse_request(head: bytes) -> Target:
    """Read a proxy request head (request line and headers, CRLF-terminated)."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return Target("?", _shown(lines[0]), None, "malformed request line")
    method, target, version = parts
    if method == "CONNECT":
        authority = parse_authority(target)
        if authority is None:
            return Target(method, _shown(target), None, "CONNECT needs host:port")
        return Target(method, authority[0], authority[1])
    split = urlsplit(target)
    if split.scheme.lower() != "http" or not split.netloc:
        return Target(method, _shown(target), None, "an absolute http:// URI is required")
    if "@" in split.netloc:
        return Target(method, _shown(split.netloc), None, "user info in the URI is refused")
    authority = parse_authority(split.netloc, default_port=80)
    if authority is None:
        return Target(method, _shown(split.netloc), None, "malformed host")
    path = split.path or "/"
    if split.query:
        path += "?" + split.query
    headers = _forwarded_headers(lines[1:], split.netloc)
    rewritten = f"{method} {path} {version}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    return Target(method, authority[0], authority[1], head=rewritten.encode("latin-1"))


def _forwarded_headers(lines: list[str], netloc: str) -> list[str]:
    named: set[str] = set()
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "connection":
            named |= {v.strip().lower() for v in value.split(",")}
    kept = []
    has_host = False
    for line in lines:
        if not line:
            continue
        name = line.partition(":")[0].strip().lower()
        if name in _HOP_HEADERS or name in named:
            continue
        has_host |= name == "host"
        kept.append(line)
    if not has_host:
        kept.insert(0, f"Host: {netloc}")
    # One request per connection: the decision was made for this request's host only.
    kept.append("Connection: close")
    return kept


def _shown(value: str) -> str:
    """Cut what a client sent to a size fit for one log line."""
    return value[:255]


class Proxy:
    """The asyncio server: decide, log, then tunnel or forward."""

    def __init__(self, allow: AllowList, out: TextIO | None = None) -> None:
        self.allow = allow
        self.out = out or sys.stdout
        self.denied = 0
        self.allowed = 0
        self.clients = 0

    def log(self, record: dict[str, object]) -> None:
        """Print one JSON line (flushed: the executor reads it after the run ends)."""
        line = json.dumps(record, separators=(",", ":"), sort_keys=False)
        print(line, file=self.out, flush=True)

    def decide(self, target: Target) -> bool:
        """Return whether ``target`` may pass, and log the decision with the running totals."""
        ok = target.error is None and target.port is not None
        ok = ok and self.allow.allows(target.host, target.port or 0)
        if ok:
            self.allowed += 1
        else:
            self.denied += 1
        record: dict[str, object] = {
            "decision": "allow" if ok else "deny",
            "host": target.host,
            "port": target.port,
            "method": target.method,
            "time": _now(),
            "denied": self.denied,
            "allowed": self.allowed,
        }
        if target.error:
            record["reason"] = target.error
        self.log(record)
        return ok

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection."""
        self.clients += 1
        try:
            if self.clients > MAX_CLIENTS:
                await _answer(writer, 503, "too many connections")
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                await _answer(writer, 431, "request head too large")
                return
            target = parse_request(head)
            if not self.decide(target):
                reason = target.error or f"egress to {target.host}:{target.port} is not allowed"
                await _answer(writer, 400 if target.error else 403, reason)
                return
            assert target.port is not None
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(target.host, target.port), CONNECT_TIMEOUT_S
                )
            except (TimeoutError, OSError) as exc:
                self.log(
                    {
                        "event": "upstream_error",
                        "host": target.host,
                        "port": target.port,
                        "error": type(exc).__name__,
                        "time": _now(),
                    }
                )
                await _answer(writer, 502, f"{target.host}:{target.port} cannot be reached")
                return
            if target.method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                up_writer.write(target.head)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                _close(up_writer)
        finally:
            self.clients -= 1
            _close(writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        # One side broke: end the other direction too instead of leaving it half open.
        _close(writer)


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    phrases = {
        400: "Bad Request",
        403: "Forbidden",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }
    body = (message + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {phrases[status]}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    try:
        await writer.drain()
    except (ConnectionError, OSError):
        pass


def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except (ConnectionError, OSError, RuntimeError):
        pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def serve(allow: AllowList, host: str, port: int) -> None:
    """Listen until killed; print a ``listening`` line once connections are accepted."""
    proxy = Proxy(allow)
    server = await asyncio.start_server(proxy.handle, host, port, limit=MAX_HEAD_BYTES)
    proxy.log({"event": "listening", "port": port, "allow": allow.entries(), "time": _now()})
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the proxy."""
    parser = argparse.ArgumentParser(description="Allow-list HTTP forward proxy")
    parser.add_argument("--allow", default="", help="comma-separated host or host:port entries")
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    try:
        allow = AllowList.parse(args.allow)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(allow, args.listen, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
