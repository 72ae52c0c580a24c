"""The ``completion`` method: options scored as continuations by an OpenAI-compatible text-completions server.

A base model served by an engine (vLLM, llama.cpp's servers, any ``/v1/completions`` endpoint) is scored the
way the embedded model is scored in-process: each option's text is the continuation of the transcript, its
score the mean of its tokens' log-probabilities, and a softmax over the options' scores gives the
distribution (:func:`selfalign.models.scoring.from_option_logprobs`). The continuation's tokens are found by
their character offsets in ``prompt + continuation`` (where the text puts a boundary inside a token, as
Gemma's SentencePiece does with the leading space of ``" Very important"``, the token that holds the
continuation's first character belongs to the continuation), so no tokenizer is needed on this side.

How the server gives the log-probabilities (``completion_logprobs``):

- ``echo`` (default): ``prompt + continuation`` is sent with ``echo=true``, ``logprobs=1``, ``max_tokens=1``;
  the reply echoes the prompt's tokens with their log-probabilities (the OpenAI completions protocol, vLLM,
  llama-cpp-python started with ``--logits_all true``). Many prompts (every option of several probes) go in
  one request.
- ``prompt_logprobs``: vLLM's ``prompt_logprobs=0`` (the prompt tokens' own log-probabilities, no echo).
- ``grammar`` (llama-cpp-python's server): the server tokenizes ``prompt`` and ``prompt + continuation``
  (``POST /extras/tokenize``); the transcript alone is sent with a GBNF grammar (``extra_body.grammar``) that
  admits nothing but the continuation's token ids (``<[id]>``, so the tokens are exactly those of the text,
  as in-process; a grammar of the continuation's *text* lets the sampler spell it with other tokens, e.g. a
  lone space and then ``Very``), and the log-probabilities of the generated tokens are read. One option per
  request. llama-cpp-python's server answers ``echo`` by sorting the whole vocabulary in Python for every
  prompt token (about 0.5 s per token for Gemma's 262k entries); under a grammar only the continuation's
  few tokens are generated, so a probe costs seconds instead of minutes.

Everything here is pure: request bodies in, replies parsed out; the client does the calls.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from selfalign.models.scoring import field_of

ECHO = "echo"
PROMPT_LOGPROBS = "prompt_logprobs"
GRAMMAR = "grammar"
STYLES = (ECHO, PROMPT_LOGPROBS, GRAMMAR)
"""How the completion method obtains the continuation's log-probabilities (see the module docstring)."""

COMPLETION_SCORING = "completion/mean-token-logprob/softmax/v1"  # bump when the parsing or the score changes
_SPIECE_SPACE = "\u2581"  # SentencePiece's visible space, which some servers leave in token strings
_UNSUPPORTED_ERROR = re.compile(
    r"logits_all|(echo|logprob\w*|grammar)\W+(is |are )?not (yet |currently )?supported"
    r"|not (yet |currently )?support\w*\W+(the )?(echo|logprob\w*|grammar)",
    re.IGNORECASE,
)


class ReplyProblem(Exception):
    """One prompt's part of a reply cannot be read: that probe fails with this reason (one line)."""


class Unsupported(Exception):
    """The server lacks what the method needs; the message names what it lacks (one line). ``refused``: the
    server said so in an error, rather than answering without it."""

    def __init__(self, what: str, *, refused: bool = False) -> None:
        super().__init__(what)
        self.refused = refused


def lacks_capability(error: str) -> bool:
    """Whether a server's error message says it cannot give what the method needs (echo, logprobs, grammar)."""
    return bool(_UNSUPPORTED_ERROR.search(error or ""))


# --- requests ---------------------------------------------------------------------------------------
def echo_request(texts: Sequence[str]) -> dict[str, Any]:
    """The completions request that echoes the log-probabilities of ``texts`` (each prompt + continuation)."""
    return {"prompt": list(texts), "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0.0}


def prompt_logprobs_request(texts: Sequence[str]) -> dict[str, Any]:
    """The completions request for vLLM's ``prompt_logprobs`` of ``texts`` (each prompt + continuation)."""
    return {"prompt": list(texts), "max_tokens": 1, "temperature": 0.0, "extra_body": {"prompt_logprobs": 0}}


def gbnf_tokens(ids: Sequence[int]) -> str:
    """A GBNF grammar whose only sentence is the token sequence ``ids`` (llama.cpp's ``<[id]>`` syntax)."""
    return "root ::= " + " ".join(f"<[{int(i)}]>" for i in ids)


def continuation_ids(prompt_ids: Sequence[int], full_ids: Sequence[int], continuation: str) -> list[int]:
    """The tokens ``prompt + continuation`` adds to the prompt's own tokens.

    Raises :class:`ReplyProblem` when the prompt's tokens are not a prefix of the whole text's (its last token
    merges with the continuation's first): the transcript alone would then not be the text's prefix.
    """
    if list(full_ids[: len(prompt_ids)]) != list(prompt_ids) or len(full_ids) <= len(prompt_ids):
        raise ReplyProblem(
            f"the prompt's last token merges with the continuation {continuation.strip()[:40]!r} "
            "(completion_logprobs='echo' scores such prompts)"
        )
    return [int(i) for i in full_ids[len(prompt_ids) :]]


def grammar_request(prompt: str, ids: Sequence[int]) -> dict[str, Any]:
    """The completions request that generates exactly the tokens ``ids`` after ``prompt``, with log-probabilities."""
    return {
        "prompt": prompt,
        "max_tokens": len(ids),
        "temperature": 0.0,
        "logprobs": 1,
        "extra_body": {"grammar": gbnf_tokens(ids)},
    }


# --- replies ----------------------------------------------------------------------------------------
def choices_by_index(response: Any, n: int) -> list[Any | None]:
    """The reply's choices in prompt order (by their ``index``); None for a prompt the reply has no choice for.

    A reply whose choices carry no usable indices is read in order only when it has exactly ``n`` choices: a
    short reply is never lined up with the prompts by guesswork.
    """
    choices = list(field_of(response, "choices") or [])
    out: list[Any | None] = [None] * n
    indices = [field_of(c, "index") for c in choices]
    if all(isinstance(i, int) for i in indices) and len(set(indices)) == len(indices):
        for i, choice in zip(indices, choices, strict=True):
            if 0 <= i < n:
                out[i] = choice
        return out
    if len(choices) == n:
        return choices
    return out


def _token_list(logprobs: Any) -> tuple[list[str], list[Any], list[Any]]:
    tokens = [str(t) for t in (field_of(logprobs, "tokens") or [])]
    values = list(field_of(logprobs, "token_logprobs") or [])
    offsets = list(field_of(logprobs, "text_offset") or [])
    return tokens, values, offsets


def _number(value: Any, where: str) -> float:
    if value is None or isinstance(value, bool):
        raise ReplyProblem(f"the reply has no log-probability for {where}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ReplyProblem(f"the reply's log-probability for {where} is not a number: {value!r}") from None
    if number != number or number > 1e-6:  # NaN, or a positive log-probability
        raise ReplyProblem(f"the reply's log-probability for {where} is not a log-probability: {value!r}")
    return min(number, 0.0)


def _spans_in(
    full: str, tokens: Sequence[str], offsets: Sequence[Any], echoed: str, boundary: int
) -> list[tuple[int, int]] | None:
    """Character spans of ``tokens`` in ``full`` (the echoed prompt and continuation), or None.

    The tokens' own text places them when it spells ``full`` (a leading special token such as ``<bos>``,
    which some servers count in their offsets, is skipped); else the server's ``text_offset`` is used, but
    only where the echoed text shows each token from the boundary on at its offset (never a guess).
    """
    joined = "".join(tokens)
    start = joined.find(full)
    if start < 0 and _SPIECE_SPACE in joined:
        tokens = [t.replace(_SPIECE_SPACE, " ") for t in tokens]
        joined = "".join(tokens)
        start = joined.find(full)
    if start >= 0:
        spans, pos = [], -start
        for token in tokens:
            spans.append((pos, pos + len(token)))
            pos += len(token)
        return spans
    if offsets and len(offsets) == len(tokens) and all(isinstance(o, int) for o in offsets):
        ends = [*offsets[1:], offsets[-1] + len(tokens[-1])]
        spans = list(zip(offsets, ends, strict=True))
        shown = all(echoed[a : a + len(t)] == t for (a, b), t in zip(spans, tokens, strict=True) if b > boundary)
        if shown and all(a <= b for a, b in spans):
            return spans
    return None


def _continuation_values(
    spans: Sequence[tuple[int, int]], values: Sequence[Any], boundary: int, end: int, what: str
) -> list[float]:
    """Log-probabilities of the tokens that hold a character of ``[boundary, end)``."""
    picked = [i for i, (a, b) in enumerate(spans) if b > boundary and a < end]
    if not picked:
        raise ReplyProblem(f"the reply's tokens do not reach the continuation ({what})")
    if spans[picked[-1]][1] > end and picked[-1] + 1 < len(spans):
        raise ReplyProblem(f"a token of the reply runs past the continuation ({what})")
    return [_number(values[i], f"the continuation's token {spans[i]!r} ({what})") for i in picked]


def echoed_logprobs(choice: Any, prompt: str, continuation: str) -> list[float]:
    """The continuation's token log-probabilities from one choice of an ``echo`` (or ``prompt_logprobs``) reply.

    Raises :class:`Unsupported` when the choice carries no log-probabilities of the prompt (the server does not
    echo them) and :class:`ReplyProblem` when they cannot be lined up with the text.
    """
    full = prompt + continuation
    what = repr(continuation.strip()[:40])
    tokens, values, offsets = _token_list(field_of(choice, "logprobs"))
    if len(tokens) != len(values):
        raise ReplyProblem(f"the reply's logprobs have {len(tokens)} tokens but {len(values)} values ({what})")
    if tokens and sum(len(t) for t in tokens) > len(full) // 2:  # the prompt was echoed (not just one token)
        spans = _spans_in(full, tokens, offsets, str(field_of(choice, "text") or ""), len(prompt))
        if spans is None:
            raise ReplyProblem(f"the reply's tokens do not spell the prompt and continuation ({what})")
        return _continuation_values(spans, values, len(prompt), len(full), what)
    prompt_logprobs = field_of(choice, "prompt_logprobs")
    if prompt_logprobs:
        return _from_prompt_logprobs(choice, prompt_logprobs, full, len(prompt), what)
    raise Unsupported("log-probabilities of the prompt's tokens (echo with logprobs, or prompt_logprobs)")


def _from_prompt_logprobs(choice: Any, entries: Sequence[Any], full: str, boundary: int, what: str) -> list[float]:
    """vLLM's ``prompt_logprobs``: one entry per prompt token (the first None), keyed by token id."""
    ids = field_of(choice, "prompt_token_ids")
    texts: list[str] = []
    values: list[Any] = []
    for k, entry in enumerate(entries):
        if entry is None:
            texts.append("")
            values.append(None)
            continue
        if not isinstance(entry, dict) or not entry:
            raise ReplyProblem(f"prompt_logprobs entry {k} is not a table of tokens ({what})")
        if ids is not None and k < len(ids) and str(ids[k]) in entry:
            item = entry[str(ids[k])]
        elif len(entry) == 1:
            item = next(iter(entry.values()))
        else:
            raise ReplyProblem(
                f"prompt_logprobs entry {k} holds several tokens and the reply names none (ask for prompt_logprobs=0)"
            )
        texts.append(str(field_of(item, "decoded_token") or ""))
        values.append(field_of(item, "logprob"))
    spans: list[tuple[int, int]] = []
    pos = len(full)
    for text in reversed(texts):  # the last prompt token ends where the text ends
        spans.append((pos - len(text), pos))
        pos -= len(text)
    spans.reverse()
    for (a, b), text in zip(spans, texts, strict=True):
        if b > boundary and text and full[max(a, 0) : b] != text:
            raise ReplyProblem(f"the reply's prompt tokens do not spell the continuation ({what})")
    return _continuation_values(spans, values, boundary, len(full), what)


def generated_logprobs(choice: Any, continuation: str, n_tokens: int) -> list[float]:
    """The continuation's token log-probabilities from one choice of a ``grammar`` reply: its ``n_tokens``
    generated tokens.

    Raises :class:`Unsupported` when the server did not keep to the grammar (it generated something else) or
    gives no log-probabilities.
    """
    what = repr(continuation.strip()[:40])
    text = str(field_of(choice, "text") or "")
    tokens, values, _offsets = _token_list(field_of(choice, "logprobs"))
    if not tokens or len(tokens) != len(values):
        raise Unsupported("log-probabilities of the generated tokens (logprobs)")
    if len(tokens) != n_tokens or text.strip() != continuation.strip():
        raise Unsupported(
            f"generation under a token grammar (asked for {n_tokens} tokens spelling {what}, "
            f"it generated {len(tokens)}: {text[:40]!r})"
        )
    return [_number(v, f"generated token {t!r} ({what})") for t, v in zip(tokens, values, strict=True)]
