"""A local webhook endpoint (real HTTP on 127.0.0.1) that checks each delivery's signature."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from matching_pipeline.jobs.notifications import SIGNATURE_HEADER, verify
from tests.servers import QuietHandler

SECRET = "webhook-secret-value"


class Receiver:
    """Answers each POST with the next of ``answers`` (then 200) and records body, signature and
    whether the signature verifies with :data:`SECRET`."""

    def __init__(self, answers: list[int]):
        self.answers = answers
        self.received: list[tuple[bytes, str | None, bool]] = []
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signature = self.headers.get(SIGNATURE_HEADER)
                receiver.received.append((body, signature, verify(SECRET, body, signature)))
                code = receiver.answers.pop(0) if receiver.answers else 200
                self._send(code, {"content-type": "text/plain"}, b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/matching?token=abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
