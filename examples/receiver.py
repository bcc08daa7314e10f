"""A webhook receiver to copy: verifies Standard Webhooks signatures and ignores duplicates.

Run it (Python 3.10+, `pip install standardwebhooks`):

    python examples/receiver.py --port 8001 --secret "$(curl -s -H "Authorization: Bearer $KEY" \
        http://127.0.0.1:8000/api/webhook-secret/ | python -c 'import json,sys; print(json.load(sys.stdin)["secret"])')"

then submit jobs with `"callback_url": "http://<this host>:8001/"` (the service refuses private
and loopback addresses unless WEBHOOK_ALLOWED_NETWORKS allows them).

What a receiver should do, and this one does: verify the signature over the raw body bytes
before parsing them; answer 2xx quickly (do slow work after answering); treat `webhook-id` as
an idempotency key, because the same event can arrive more than once.

The test suite imports `Receiver` as its real HTTP receiver on loopback; `replies` lets a test
script the answers (a status, headers, a delay).
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Reply:
    """How to answer one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'
    # Wait this long before answering (to play a slow receiver).
    delay_seconds: float = 0.0


@dataclass
class Received:
    """One request as it arrived: headers (lower-case names), the raw body, verification."""

    headers: dict[str, str]
    body: bytes
    path: str
    # None when the receiver has no secret to verify with.
    verified: bool | None
    status: int
    # When it arrived (time.monotonic()).
    received_at: float = field(default_factory=time.monotonic)

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    # TCP_NODELAY: without it a small answer can sit ~40 ms in Nagle's buffer.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.receiver._handle(self, headers, body)

    def reply(self, reply: Reply) -> None:
        # Status line, headers and body in one write: one TCP segment, no stall.
        lines = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}"]
        headers = {"Content-Type": "application/json", **reply.headers}
        headers["Content-Length"] = str(len(reply.body))
        headers["Connection"] = "close"
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet; `Receiver.received` is the log


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog (socketserver's default is 5): a sender opens several connections at
    # once, and a full backlog resets them. Production servers use 128 or more.
    request_queue_size = 128
    receiver: Receiver


class Receiver:
    """An HTTP server that records (and, given a secret, verifies) every webhook it gets."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: str | None = None,
        replies: Iterable[Reply] = (),
        on_event: Any = None,
    ) -> None:
        self.secret = secret
        self.replies: deque[Reply] = deque(replies)
        self.received: list[Received] = []
        self.processed_ids: set[str] = set()
        self.on_event = on_event
        self._condition = threading.Condition()
        self._server = _Server((host, port), _Handler)
        self._server.receiver = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def _next_reply(self, verified: bool | None) -> Reply:
        with self._condition:
            if self.replies:
                return self.replies.popleft()
        if verified is False:
            return Reply(status=401, body=b'{"error":"bad signature"}')
        return Reply()

    def _handle(self, handler: _Handler, headers: dict[str, str], body: bytes) -> None:
        verified: bool | None = None
        if self.secret:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        reply = self._next_reply(verified)
        if reply.delay_seconds:
            time.sleep(reply.delay_seconds)
        if reply.status // 100 == 2 and verified is not False:
            webhook_id = headers.get("webhook-id", "")
            if webhook_id not in self.processed_ids:  # a duplicate is acknowledged, not redone
                self.processed_ids.add(webhook_id)
                if self.on_event:
                    self.on_event(json.loads(body))
        with self._condition:
            self.received.append(
                Received(headers=headers, body=body, path=handler.path, verified=verified, status=reply.status)
            )
            self._condition.notify_all()
        try:
            handler.reply(reply)
        except OSError:
            pass  # the sender gave up (timed out) before we answered

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """Block until `count` requests arrived; all requests so far (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} webhooks, got {len(self.received)}")
                self._condition.wait(remaining)
            return list(self.received)

    def start(self) -> Receiver:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--secret", required=True, help="whsec_... from GET /api/webhook-secret/")
    args = parser.parse_args()

    def show(event: dict[str, Any]) -> None:
        data = event["data"]
        if event["type"].startswith("job."):
            print(f"{event['timestamp']} {event['type']} job {data['id']} status {data['status']}", flush=True)
        else:  # an endpoint's webhook.test or endpoint.disabled: about the endpoint, not a job
            print(f"{event['timestamp']} {event['type']} endpoint {data.get('endpoint_id', data.get('id'))}",
                  flush=True)

    receiver = Receiver(host=args.host, port=args.port, secret=args.secret, on_event=show)
    print(f"Listening on {receiver.url}", flush=True)
    try:
        receiver._server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
