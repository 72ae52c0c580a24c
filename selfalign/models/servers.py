"""Start llama-cpp-python's own OpenAI-compatible server serving the embedded model, on 127.0.0.1.

Used by the tests and ``bench/compare_server_vs_inprocess.py`` to exercise the hosted path against a real
server that no one here wrote; also a quick way to serve the embedded model to other programs::

    with LlamaCppServer() as server:                       # chat: top_logprobs of the answer letter
        ModelClient("openai/gemma", api_base=server.api_base).score(prompt)
    with LlamaCppServer() as server:                       # base model: options scored as continuations
        ModelClient("openai/gemma", api_base=server.api_base, method="completion",
                    completion_logprobs="grammar").score(prompt)

``logits_all`` (``--logits_all``, the server's default) is what lets the server return any log-probabilities
(of prompt tokens with ``echo``, of generated ones); it keeps a row of 262k floats per context position, so
``n_ctx`` sets its memory (1 GiB per 1,024 positions). ``flash_attn`` is on by default because llama.cpp
picks flash attention for the in-process model: without it the two disagree by up to 0.2 nat on a token.
``n_batch`` is how many tokens the server evaluates per step; llama.cpp's numbers on this model change with
how a sequence is split (``n_batch=1`` makes every request's numbers independent of what the server
evaluated before).

Needs the ``server`` extra (``pip install 'llama-cpp-python[server]'``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selfalign.errors import ModelError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_available() -> bool:
    """Whether ``python -m llama_cpp.server`` can run here (the ``server`` extra is installed)."""
    try:
        import llama_cpp.server.app  # noqa: F401
    except Exception:
        return False
    return True


class LlamaCppServer:
    """``python -m llama_cpp.server`` in a subprocess, serving a GGUF model (default: the embedded one)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        alias: str = "gemma",
        n_ctx: int = 4096,
        n_threads: int | None = None,
        port: int | None = None,
        startup_s: float = 120.0,
        logits_all: bool = True,
        flash_attn: bool = True,
        n_batch: int | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path else None
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads or min(os.cpu_count() or 2, 8)
        self.port = port or free_port()
        self.startup_s = startup_s
        self.logits_all = logits_all
        self.flash_attn = flash_attn
        self.n_batch = n_batch
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server

    @property
    def api_base(self) -> str:
        """The OpenAI-compatible base URL (``http://127.0.0.1:<port>/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaCppServer:
        """Start the server and wait until it answers ``GET /v1/models``."""
        if self.model_path is None:
            from selfalign.models.embedded import default_model_path

            self.model_path = default_model_path()
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--logits_all",
            "true" if self.logits_all else "false",
            "--flash_attn",
            "true" if self.flash_attn else "false",
        ]
        if self.n_batch is not None:
            cmd += ["--n_batch", str(self.n_batch), "--n_ubatch", str(self.n_batch)]
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ModelError(f"llama_cpp.server exited with code {self._proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.api_base}/models", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise ModelError(f"llama_cpp.server did not answer within {self.startup_s:.0f} s")

    def log_tail(self, n: int = 2000) -> str:
        """The end of the server's output (for error messages)."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-n:]

    def stop(self) -> None:
        """Stop the server process (terminate, then kill after 10 s)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
