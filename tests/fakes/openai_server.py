"""A local server speaking the Chat Completions protocol, scripted per test, for the checklist job.

The real `openai` client in the real worker reaches it through OPENAI_BASE_URL. Each test opens a
`Scenario`: a unique token plus the replies to give, in order, to requests that carry the token
anywhere in their messages. The test puts the token in its guidelines (the summarise call) and in
its scripted summary (which the checklist call sends back), so tests running side by side never
take each other's replies. Every request is recorded under its token for assertions.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

TOKEN_PATTERN = re.compile(r"scenario-[0-9a-f]{32}")
FAKE_API_KEY = "sk-fake-test-key"


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer."""

    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # Held until the test sets it, so the test can look at the job mid-call.
    gate: threading.Event | None = None
    # Close the connection without answering (the client sees a connection error).
    drop: bool = False
    # Send the body a byte at a time, this many seconds apart (headers at once).
    drip_seconds: float = 0.0
    # Spaces before the body's JSON (which JSON allows), to make the body this much larger.
    padding_bytes: int = 0
    # Send no Content-Length: the body ends when the connection is closed.
    unsized: bool = False
    # A Content-Encoding header to send (the body is sent as it is).
    content_encoding: str | None = None

    @classmethod
    def answer(
        cls,
        content: dict[str, Any] | str,
        *,
        finish_reason: str = "stop",
        gate: threading.Event | None = None,
        total_tokens: int = 20,
    ) -> Reply:
        """A successful completion whose message content is `content` (JSON-encoded if not a str),
        reporting `total_tokens` spent (half the prompt's, half the answer's, about)."""
        prompt_tokens = total_tokens // 2
        text = content if isinstance(content, str) else json.dumps(content)
        return cls(
            body={
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "fake-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": total_tokens - prompt_tokens,
                    "total_tokens": total_tokens,
                },
            },
            gate=gate,
        )

    @classmethod
    def error(
        cls, status: int, message: str, *, headers: dict[str, str] | None = None, code: str | None = None
    ) -> Reply:
        """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""
        return cls(
            status=status,
            body={"error": {"message": message, "type": "fake_error", "param": None, "code": code}},
            headers=headers or {},
        )


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    # Names lower-cased.
    headers: dict[str, str]
    body: dict[str, Any]
    # time.monotonic() when it arrived (this process's clock).
    received_at: float


class Scenario:
    """The replies scripted for one test, and the requests that test's job made."""

    def __init__(self, server: FakeOpenAI, token: str) -> None:
        self.server = server
        self.token = token

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests_for(self.token)

    def add(self, *replies: Reply) -> None:
        self.server.add_replies(self.token, replies)


class FakeOpenAI:
    """The server: start it, open scenarios, read what was asked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: dict[str, deque[Reply]] = {}
        self._requests: dict[str, list[RecordedRequest]] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def scenario(self, *replies: Reply) -> Scenario:
        token = f"scenario-{uuid.uuid4().hex}"
        self.add_replies(token, replies)
        return Scenario(self, token)

    def add_replies(self, token: str, replies: tuple[Reply, ...]) -> None:
        with self._lock:
            self._replies.setdefault(token, deque()).extend(replies)

    def requests_for(self, token: str) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests.get(token, []))

    def take(self, request: RecordedRequest) -> Reply:
        """Record `request` under its token and return the next reply scripted for it."""
        messages = request.body.get("messages") if isinstance(request.body, dict) else None
        text = json.dumps(messages) if messages is not None else ""
        match = TOKEN_PATTERN.search(text)
        token = match.group(0) if match else ""
        with self._lock:
            self._requests.setdefault(token, []).append(request)
            queue = self._replies.get(token)
            if queue:
                return queue.popleft()
        # A 400 fails the job at once (no retries), so a missing script shows up quickly.
        return Reply.error(400, f"fake server: nothing scripted for token {token or '(none)'}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in one write, and without Nagle's ~40 ms wait for an ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(Reply.error(404, f"fake server: no route {self.path}"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(Reply.error(400, "fake server: the request body is not JSON"))
            return
        fake: FakeOpenAI = self.server.fake  # type: ignore[attr-defined]
        reply = fake.take(
            RecordedRequest(
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
                received_at=time.monotonic(),
            )
        )
        if reply.gate is not None:
            reply.gate.wait(timeout=60)
        if reply.drop:
            self.close_connection = True
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        payload = json.dumps(reply.body).encode()
        reason = HTTPStatus(reply.status).phrase
        head = [f"HTTP/1.1 {reply.status} {reason}", "Content-Type: application/json"]
        if reply.unsized:
            head.append("Connection: close")
            self.close_connection = True
        else:
            head.append(f"Content-Length: {reply.padding_bytes + len(payload)}")
        if reply.content_encoding:
            head.append(f"Content-Encoding: {reply.content_encoding}")
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode()
        try:
            if reply.drip_seconds:
                self.wfile.write(head_bytes)
                for index in range(len(payload)):
                    self.wfile.write(payload[index:index + 1])
                    time.sleep(reply.drip_seconds)
                return
            if reply.padding_bytes:
                self.wfile.write(head_bytes)
                chunk = b" " * 65536
                for _ in range(reply.padding_bytes // len(chunk)):
                    self.wfile.write(chunk)
                self.wfile.write(b" " * (reply.padding_bytes % len(chunk)) + payload)
                return
            self.wfile.write(head_bytes + payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (its timeout): nothing to answer
