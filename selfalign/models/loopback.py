"""A small OpenAI-compatible server on 127.0.0.1, for tests and benchmarks.

It speaks just enough of the protocol (``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /v1/models``) for LiteLLM's OpenAI client, including ``logprobs.content[0].top_logprobs`` in chat and
echoed prompt log-probabilities (or vLLM's ``prompt_logprobs``) for lists of prompts in text completions, and
it can inject faults: HTTP error codes (with ``Retry-After`` on 429), hanging requests, a fixed delay, replies
with too few choices, a context limit, servers that do not echo or take one prompt per request. It counts the
requests that reach it, so a test can prove that a cached run makes no call. It is not a model: the answers
come from a policy the test sets (:class:`Reply` objects; for text completions a made-up tokenizer, words
with their leading space, and a log-probability per token from ``token_logprob``), so that parsing can be
checked by hand.

Run it standalone (used by the runner benchmark, so the server does not share the client's interpreter)::

    python -m selfalign.models.loopback --delay 0.1    # prints "PORT <n>" on stdout, serves until killed
"""

from __future__ import annotations

import argparse
import json
import re
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
TokenLogprob = Callable[[str, str], float]
"""(text before the token, the token) -> its log-probability, for the text-completions endpoint."""
_WORD = re.compile(r"\s*[^\s]+|\s+")
COMPLETION_MODES = ("echo", "no_echo", "prompt_logprobs", "bos_text", "one_prompt", "grammar")


def split_tokens(text: str) -> list[str]:
    """The loopback's made-up tokenizer: each word with the spaces before it (as SentencePiece attaches them)."""
    return _WORD.findall(text)


def default_token_logprob(before: str, token: str) -> float:
    """A fixed, hand-checkable log-probability: -0.1 per character of the token, at most -1.0."""
    return -0.1 * min(10, max(1, len(token.strip())))


def default_policy(request: dict[str, Any], index: int) -> Reply:
    """Answer "A" with most of the mass on A, some on B (the fixed figures make tests hand-checkable)."""
    return Reply("A", (("A", -0.2231435513), ("B", -1.8971199849), (" The", -3.0)))


@dataclass
class LoopbackServer:
    """A threaded HTTP server speaking OpenAI chat completions, with fault injection.

        ``faults`` is consumed one per request, in order: an int answers that HTTP status (an error body; 401
        echoes the ``Authorization`` header it received, as careless APIs do), the
        string ``"hang"`` keeps the request open until the server stops (or ``hang_s`` passes), ``"short"``
        answers a text-completions request with its last choice left out, ``None`` answers normally. After the
        list is used up every request is answered normally, after ``delay_s``. ``echo_auth`` appends the
        ``Authorization`` header to every chat answer (a normal reply that leaks the key) and to every error body
    (whole, and its last 16 characters apart).

        Text completions (``completion_mode``): ``echo`` answers like vLLM or OpenAI (the prompt's tokens and
        log-probabilities echoed, the first one null, then one generated token ``" X"``); ``bos_text`` also puts a
        ``<bos>`` token first, counted in the offsets (as vLLM does); ``prompt_logprobs`` answers vLLM's
        ``prompt_logprobs`` instead of echoing; ``no_echo`` ignores ``echo`` (only the generated token);
        ``one_prompt`` refuses a list of more than one prompt with a 500 (as llama-cpp-python's server does);
        ``grammar`` generates exactly the tokens of a ``root ::= <[id]> ...`` grammar, with ids from its
        ``POST /extras/tokenize`` (which it answers in every mode: ``0`` for the BOS token, then one id per
        word). ``max_context`` refuses a request holding a prompt of more tokens with a 400 naming the limit.
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
    echo_auth: bool = False
    completion_mode: str = "echo"
    token_logprob: TokenLogprob = default_token_logprob
    max_context: int | None = None

    def __post_init__(self) -> None:
        self._vocab: dict[str, int] = {}
        self._words: dict[int, str] = {}
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

    def _completion(self, body: dict[str, Any], index: int, auth: str = "") -> dict[str, Any]:
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
        if self.echo_auth:
            for choice in choices:
                choice["message"]["content"] += f" ({auth})"
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

    def _text_choice(self, text: str, index: int, echo: bool, grammar: str) -> dict[str, Any]:
        """One choice of a text-completions reply for prompt ``text``."""
        mode = self.completion_mode
        tokens = split_tokens(text)
        values: list[float | None] = []
        done = ""
        for token in tokens:
            values.append(self.token_logprob(done, token) if done else None)
            done += token
        generated, generated_lp = " X", -0.5
        if mode == "grammar":
            gen = [self._words.get(int(i), "") for i in re.findall(r"<\[(\d+)\]>", grammar)]
            literal = "".join(gen)
            lps, seen = [], text
            for token in gen:
                lps.append(self.token_logprob(seen, token))
                seen += token
            offsets = [len(text) + sum(len(t) for t in gen[:k]) for k in range(len(gen))]
            return {
                "index": index,
                "text": literal,
                "logprobs": {"tokens": gen, "token_logprobs": lps, "text_offset": offsets, "top_logprobs": None},
                "finish_reason": "stop",
            }
        if mode == "prompt_logprobs":
            entries: list[Any] = [None]
            for k in range(1, len(tokens)):
                entries.append({str(1000 + k): {"logprob": values[k], "rank": 1, "decoded_token": tokens[k]}})
            return {
                "index": index,
                "text": generated,
                "logprobs": None,
                "finish_reason": "length",
                "prompt_logprobs": entries,
            }
        if not echo or mode == "no_echo":
            lp = {
                "tokens": [generated],
                "token_logprobs": [generated_lp],
                "text_offset": [len(text)],
                "top_logprobs": [{generated: generated_lp}],
            }
            return {"index": index, "text": generated, "logprobs": lp, "finish_reason": "length"}
        shown = [*tokens, generated]
        shown_values = [*values, generated_lp]
        if mode == "bos_text":
            shown, shown_values = ["<bos>", *shown], [None, *shown_values]
        offsets, pos = [], 0
        for token in shown:
            offsets.append(pos)
            pos += len(token)
        top = [None if v is None else {t: v} for t, v in zip(shown, shown_values, strict=True)]
        lp = {"tokens": shown, "token_logprobs": shown_values, "text_offset": offsets, "top_logprobs": top}
        return {"index": index, "text": text + generated, "logprobs": lp, "finish_reason": "length"}

    def tokenize(self, text: str) -> list[int]:
        """The loopback's token ids of ``text`` (``0`` first, as a BOS token), one per word, stable per server."""
        ids = [0]
        with self._lock:
            for token in split_tokens(text):
                if token not in self._vocab:
                    self._vocab[token] = len(self._vocab) + 1
                    self._words[self._vocab[token]] = token
                ids.append(self._vocab[token])
        return ids

    def _text_completion(self, body: dict[str, Any], index: int) -> tuple[int, dict[str, Any]]:
        """(status, payload) of a text-completions request."""
        prompts = body.get("prompt", "")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if self.completion_mode == "one_prompt" and len(prompts) > 1:
            return 500, {"error": {"message": "Internal Server Error", "type": "server_error"}}
        if self.max_context is not None:
            for text in prompts:
                n = len(split_tokens(str(text)))
                if n > self.max_context:
                    message = (
                        f"This model's maximum context length is {self.max_context} tokens. However, you requested "
                        f"{n + 1} tokens ({n} in the messages, 1 in the completion)."
                    )
                    return 400, {"error": {"message": message, "type": "invalid_request_error"}}
        grammar = str(body.get("grammar") or "")
        echo = bool(body.get("echo")) and body.get("logprobs") is not None
        choices = [self._text_choice(str(text), i, echo, grammar) for i, text in enumerate(prompts)]
        tokens = sum(len(split_tokens(str(t))) for t in prompts)
        return 200, {
            "id": f"cmpl-loopback-{index}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", "loopback"),
            "choices": choices,
            "usage": {
                "prompt_tokens": tokens,
                "completion_tokens": len(prompts),
                "total_tokens": tokens + len(prompts),
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
            path = self.path.rstrip("/")
            if path.endswith("/extras/tokenize"):
                try:
                    data = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    data = {}
                self._send(200, {"tokens": server.tokenize(str(data.get("input", "")))})
                return
            text = path.endswith("/v1/completions") or path == "/completions"
            if not path.endswith("/chat/completions") and not text:
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
                elif server.echo_auth:  # a careless server: every error body repeats the request's header
                    auth = self.headers.get("Authorization", "")
                    text += f" (request had Authorization: {auth}; the key ends in {auth[-16:]})"
                message = {"error": {"message": text, "type": "server_error", "code": fault}}
                self._send(fault, message, extra)
                return
            if server.delay_s:
                time.sleep(server.delay_s)
            if text:
                status, payload = server._text_completion(body, index)
                if fault == "short" and payload.get("choices"):
                    payload["choices"] = payload["choices"][:-1]
                self._send(status, payload)
                return
            self._send(200, server._completion(body, index, self.headers.get("Authorization", "")))

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
