"""A local webhook endpoint (real HTTP on 127.0.0.1) that verifies each delivery the Standard
Webhooks way, with the ``standardwebhooks`` library itself (not the sender's code), and refuses
replays: a ``webhook-id`` it has accepted before is answered 409 and not counted as valid."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.servers import QuietHandler

SECRET = "webhook-secret-value"


class Receiver:
    """Answers each POST with the next of ``answers`` (then 200) and records body, headers and
    whether the delivery verified with :data:`SECRET` and was not a replay."""

    def __init__(self, answers: list[int], secret: str = SECRET):
        self.answers = answers
        self.received: list[tuple[bytes, dict[str, str], bool]] = []
        self.accepted_ids: set[str] = set()
        verifier = Webhook(secret.encode())
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    verifier.verify(body, headers, json_parse=False)
                    valid = True
                except WebhookVerificationError:
                    valid = False
                replay = headers.get("webhook-id") in receiver.accepted_ids
                receiver.received.append((body, headers, valid and not replay))
                code = 409 if replay else (receiver.answers.pop(0) if receiver.answers else 200)
                if valid and code < 300:
                    receiver.accepted_ids.add(headers["webhook-id"])
                self._send(code, {"content-type": "text/plain"}, b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/matching?token=abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
