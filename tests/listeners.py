"""Sockets on 127.0.0.1 that stand in for a Ray cluster's address, for the Ray address check.

A real Ray head is a GCS server speaking gRPC over HTTP/2; starting one takes tens of seconds and
most of this machine, so the tests that need an address that answers use ``grpc_listener``, which
answers a connection as any HTTP/2 server does: with its SETTINGS frame. (The check itself was run
against a real GCS from ``ray.init()``; see core/config.py.) ``silent_listener`` accepts
connections and never answers, as a firewall's tarpit or a wrong service can; ``closed_address``
is a port nothing listens on.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# An empty HTTP/2 SETTINGS frame: length 0, type 4, no flags, stream 0 (RFC 9113, 6.5).
SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@contextmanager
def silent_listener() -> Iterator[str]:
    """``HOST:PORT`` of a socket whose backlog accepts connections; nothing ever answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"127.0.0.1:{server.getsockname()[1]}"


@contextmanager
def grpc_listener() -> Iterator[str]:
    """``HOST:PORT`` of a server that sends an HTTP/2 SETTINGS frame to every connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.sendall(SETTINGS_FRAME)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()


def closed_address() -> str:
    """A local address nothing listens on (a port just released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"
