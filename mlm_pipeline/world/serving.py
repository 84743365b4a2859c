"""Threaded HTTP servers on free loopback ports, started and stopped by the code that needs them."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def get_request(self) -> tuple[socket.socket, object]:
        # Without TCP_NODELAY a keep-alive answer written as headers then body waits ~40 ms for
        # the client's delayed ACK (Nagle), which caps a loopback server at ~25 answers a second.
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hang up on purpose (timeouts, refused oversized bodies, injected truncation):
        # count that instead of printing a traceback; anything else is a real server bug.
        import sys

        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            self.running.count("client_disconnects")  # type: ignore[attr-defined]
            return
        super().handle_error(request, client_address)


@dataclass
class RunningServer:
    """A server on 127.0.0.1 with the counters that tests and benchmarks read."""

    name: str
    server: QuietServer
    thread: threading.Thread
    counters: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + n

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def start_server(name: str, handler: type[BaseHTTPRequestHandler], port: int = 0) -> RunningServer:
    """Serve ``handler`` on 127.0.0.1 (never another interface) in a daemon thread.

    The handler finds its ``RunningServer`` as ``self.server.running`` to count requests.
    """
    server = QuietServer(("127.0.0.1", port), handler)
    # A short poll interval makes stop() take 50 ms instead of 500 ms, which tests feel.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{name}-server", daemon=True
    )
    running = RunningServer(name=name, server=server, thread=thread)
    server.running = running  # type: ignore[attr-defined]
    thread.start()
    return running
