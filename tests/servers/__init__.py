"""Local stand-ins for external services (real HTTP servers on 127.0.0.1), for tests and benches."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


class QuietHandler(BaseHTTPRequestHandler):
    """Request handler base: sends a reply, survives clients that gave up, logs nothing."""

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        try:
            self.send_response(status)
            if "content-type" not in headers:
                self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        return


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 (random free port, background thread) that tests script.

    Subclasses are dataclasses holding what they answer; this base owns the plumbing they share:
    the server's life cycle, the queue of scripted behaviours, and a token bucket that answers
    "rate_limit" when requests arrive faster than ``rate_per_second()`` allows.
    """

    behaviours: ClassVar[tuple[str, ...]]
    handler: ClassVar[type[BaseHTTPRequestHandler]]
    url_path: ClassVar[str] = ""
    received: list[Any]

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[str] = deque()
        self._bucket = math.inf  # starts full: min(capacity, ...) below
        self._bucket_at = time.monotonic()
        self._httpd: ThreadingHTTPServer | None = None

    def rate_per_second(self) -> float | None:
        """The server's request limit, or None for no limit."""
        return None

    def script(self, *behaviours: str) -> None:
        """Answer the next requests with these behaviours, in order, then ``ok`` again."""
        unknown = [b for b in behaviours if b not in self.behaviours]
        if unknown:
            raise ValueError(f"unknown behaviour(s) {unknown}; choose from {self.behaviours}")
        with self._lock:
            self._queue.extend(behaviours)

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.url_path}"

    @property
    def count(self) -> int:
        return len(self.received)

    def statuses(self) -> list[int]:
        return [r.status for r in self.received]

    def start(self):
        handler = type("Handler", (self.handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, name=type(self).__name__, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self) -> tuple[str, float | None]:
        """The behaviour for a request that just arrived, and the wait a rate limit imposes."""
        rate = self.rate_per_second()
        with self._lock:
            if rate:
                capacity = max(1.0, rate)
                now = time.monotonic()
                self._bucket = min(capacity, self._bucket + (now - self._bucket_at) * rate)
                self._bucket_at = now
                if self._bucket < 1.0:
                    return "rate_limit", (1.0 - self._bucket) / rate
                self._bucket -= 1.0
            return (self._queue.popleft() if self._queue else "ok"), None
