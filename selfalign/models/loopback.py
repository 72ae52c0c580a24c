"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

It speaks just enough of the protocol (``POST /v1/chat/completions``, ``GET /v1/models``) for LiteLLM's
OpenAI client, including ``logprobs.content[0].top_logprobs``, and it can inject faults: HTTP error codes
(with ``Retry-After`` on 429), hanging requests and a fixed delay. It counts the requests that reach it, so a
test can prove that a cached run makes no call. It is not a model: the answers come from a policy the test
sets (:class:`Reply` objects), so that parsing can be checked by hand.

Run it standalone (used by the runner benchmark, so the server does not share the client's interpreter)::

    python -m selfalign.models.loopback --delay 0.1    # prints "PORT <n>" on stdout, serves until killed
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One answer of the server: the text and the top log-probabilities of its first token."""

    content: str
    top_logprobs: Sequence[tuple[str, float]] = ()


Policy = Callable[[dict[str, Any], int], Reply | Sequence[Reply]]


def default_policy(request: dict[str, Any], index: int) -> Reply:
    """Answer "A" with most of the mass on A, some on B (the fixed figures make tests hand-checkable)."""
    return Reply("A", (("A", -0.2231435513), ("B", -1.8971199849), (" The", -3.0)))


@dataclass
class LoopbackServer:
    """A threaded HTTP server speaking OpenAI chat completions, with fault injection.

    ``faults`` is consumed one per request, in order: an int answers that HTTP status (an error body; 401
    echoes the ``Authorization`` header it received, as careless APIs do), the
    string ``"hang"`` keeps the request open until the server stops (or ``hang_s`` passes), ``None`` answers
    normally. After the list is used up every request is answered normally, after ``delay_s``.
    """

    policy: Policy = default_policy
    faults: list[int | str | None] = field(default_factory=list)
    delay_s: float = 0.0
    hang_s: float = 30.0
    retry_after_s: float | None = 0.05
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    record: bool = True
    logprobs_supported: bool = True

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def request_count(self) -> int:
        """Requests that reached the chat-completions endpoint."""
        with self._lock:
            return self._count

    @property
    def api_base(self) -> str:
        """The ``api_base`` to give an OpenAI-compatible client (ends in ``/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> LoopbackServer:
        """Bind (a free port when ``port`` is 0) and serve in a daemon thread."""
        handler = _make_handler(self)
        httpd = ThreadingHTTPServer((self.host, self.port), handler, bind_and_activate=False)
        httpd.daemon_threads = True
        # the listen backlog is fixed when the socket starts listening (the default, 5, drops the SYNs of
        # many clients connecting at once: each dropped one then waits ~1 s to retry)
        httpd.request_queue_size = 256
        try:
            httpd.server_bind()
            httpd.server_activate()
        except BaseException:
            httpd.server_close()
            raise
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging requests are released."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- request handling -------------------------------------------------------------------------
    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, int | str | None]:
        with self._lock:
            index = self._count
            self._count += 1
            if self.record:
                self.requests.append(body)
                self.headers_seen.append(headers)
            fault = self.faults[index] if index < len(self.faults) else None
        return index, fault

    def _completion(self, body: dict[str, Any], index: int) -> dict[str, Any]:
        replies = self.policy(body, index)
        if isinstance(replies, Reply):
            n = int(body.get("n") or 1)
            replies = [replies] * n
        want_logprobs = bool(body.get("logprobs")) and self.logprobs_supported
        k = int(body.get("top_logprobs") or 0)
        choices = []
        for i, reply in enumerate(replies):
            logprobs = None
            if want_logprobs:
                top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in reply.top_logprobs[:k]]
                first = top[0] if top else {"token": reply.content[:1], "logprob": 0.0, "bytes": []}
                logprobs = {"content": [{**first, "top_logprobs": top}]}
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": reply.content},
                    "logprobs": logprobs,
                    "finish_reason": "stop",
                }
            )
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return {
            "id": f"chatcmpl-loopback-{index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "loopback"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(choices),
                "total_tokens": prompt_tokens + len(choices),
            },
        }


def _make_handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Without this, the header and body writes of one answer meet Nagle's algorithm and the client's
        # delayed ACK: every answer then waits ~40 ms more on loopback (measured: 49 ms per call at delay 0).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
            return

        def _send(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": "loopback", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found", "type": "not_found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": "not found", "type": "not_found"}})
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
                return
            index, fault = server._next(body, {k.lower(): v for k, v in self.headers.items()})
            if fault == "hang":
                server._stop.wait(server.hang_s)
                return
            if isinstance(fault, int):
                extra = {}
                if fault == 429 and server.retry_after_s is not None:
                    extra["Retry-After"] = f"{server.retry_after_s:g}"
                text = f"injected fault {fault}"
                if fault == 401:  # like real APIs, echo (part of) the key that was sent
                    text = f"Incorrect API key provided: {self.headers.get('Authorization', '')}"
                message = {"error": {"message": text, "type": "server_error", "code": fault}}
                self._send(fault, message, extra)
                return
            if server.delay_s:
                time.sleep(server.delay_s)
            self._send(200, server._completion(body, index))

    return Handler


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until killed; print ``PORT <n>`` once listening."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    server = LoopbackServer(delay_s=args.delay, port=args.port, record=False).start()
    print(f"PORT {server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
