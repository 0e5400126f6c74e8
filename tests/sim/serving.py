"""Running a simulator's socket server in the background, the one way all simulators do it."""

from __future__ import annotations

import socketserver
import threading


def serve_in_background(server: socketserver.BaseServer, name: str) -> int:
    """Serve ``server`` from a daemon thread; return the port it listens on."""
    threading.Thread(target=server.serve_forever, daemon=True, name=name).start()
    return int(server.server_address[1])  # type: ignore[index]


def stop(server: socketserver.BaseServer | None) -> None:
    """Stop serving and close the listening socket (nothing to do if never started)."""
    if server is not None:
        server.shutdown()
        server.server_close()
