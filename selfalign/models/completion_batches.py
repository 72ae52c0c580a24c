"""Batched requests of the ``completion`` method: many probes' options in one text-completions request.

:class:`CompletionScorer` sends the options of ``batch_size`` probes together (``echo`` and ``prompt_logprobs``:
one request holding every ``prompt + option``; ``grammar``: one request per option, the batch's probes taken
in turn so that a llama.cpp server never evaluates the same transcript twice in a row) and turns the reply
into one :class:`~selfalign.models.types.AnswerDistribution` per probe:

- a request that fails (after the caller's retries) is sent again probe by probe, so one prompt the server
  refuses (say, longer than its context) fails alone, with the server's reason, and no probe is lost or
  answered twice; a server that takes one prompt per request (llama-cpp-python's) is found out by the first
  such failure, and from then on every prompt goes alone;
- a reply with fewer choices than prompts fails the probes it has no choice for, never shifting the others;
- a server that lacks what the method needs (no echoed log-probabilities, no grammar) fails the batch with
  one line naming the model, what it lacks and the methods that work without it, and every later batch of
  the client fails at once with it, without calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from selfalign.models import calls, completions, scoring
from selfalign.models.calls import Caller, CallFailed
from selfalign.models.completions import ECHO, GRAMMAR, PROMPT_LOGPROBS, ReplyProblem, Unsupported
from selfalign.models.types import AnswerDistribution, RenderedPrompt, ScoringMethod

OTHER_METHODS = "logprob (chat top_logprobs), sample, greedy or verbalized"


class CompletionScorer:
    """Scores probes with the ``completion`` method through ``caller`` (text completions, retries, statistics)."""

    def __init__(self, caller: Caller, model: str, *, style: str = ECHO, local: bool = False) -> None:
        self.caller = caller
        self.model = model
        self.style = style
        self.local = local
        self.unsupported: str | None = None  # set once the server showed it lacks what the method needs
        self.one_prompt_per_request = False  # set once the server refused a list but took a prompt alone
        self._tried_alone = False
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self) -> asyncio.Lock:
        loop = id(asyncio.get_running_loop())
        if loop not in self._locks:
            self._locks[loop] = asyncio.Lock()
        return self._locks[loop]

    def _lacks(self, problem: Unsupported) -> str:
        what = str(problem)
        if problem.refused:
            text = f"{self.model}: the server refuses what method 'completion' needs ({what})"
        else:
            text = f"{self.model}: the server gives no {what}, which method 'completion' needs"
        if "logits_all" in what or "prompt's tokens" in what:
            text += " (llama-cpp-python's server gives them when started with --logits_all true)"
        return f"{text}; methods that work without it: {OTHER_METHODS}"

    def failed(self, prompt: RenderedPrompt, error: str) -> AnswerDistribution:
        """A failed result for ``prompt`` (never cached, never an answer)."""
        return AnswerDistribution.failure(prompt, ScoringMethod.COMPLETION, error)

    async def score(self, prompts: Sequence[RenderedPrompt]) -> list[AnswerDistribution]:
        """One distribution per probe of the batch, in order; never raises for model failures."""
        if self.unsupported is not None:
            return [self.failed(p, self.unsupported) for p in prompts]
        try:
            if self.style == GRAMMAR:
                return await self._score_grammar(prompts)
            return await self._score_echo(prompts)
        except Unsupported as exc:
            self.unsupported = self._lacks(exc)
            return [self.failed(p, self.unsupported) for p in prompts]

    async def _call(self, request: dict[str, Any]) -> tuple[Any, float]:
        """One completions request; a server that lacks the capability raises :class:`Unsupported` (every
        later batch fails at once), any other failure :class:`CallFailed`."""
        try:
            return await self.caller.call(request, text=True)
        except CallFailed as exc:
            if completions.lacks_capability(str(exc)):
                raise Unsupported(str(exc), refused=True) from None
            raise

    # --- echo and prompt_logprobs: one request for the batch -----------------------------------------------
    def _build(self, texts: Sequence[str]) -> dict[str, Any]:
        if self.style == PROMPT_LOGPROBS:
            return completions.prompt_logprobs_request(texts)
        return completions.echo_request(texts)

    async def _score_echo(self, prompts: Sequence[RenderedPrompt]) -> list[AnswerDistribution]:
        if self.one_prompt_per_request:
            return [await self._score_alone(p) for p in prompts]
        texts = [p.text + c for p in prompts for c in p.continuations]
        try:
            response, latency = await self._call(self._build(texts))
        except CallFailed as exc:
            if len(prompts) > 1:  # find the probe the server refuses: each alone
                return [d for p in prompts for d in await self._score_echo([p])]
            if len(texts) > 1:
                async with self._lock():  # does the server take one prompt per request only? (asked once)
                    if self.one_prompt_per_request:
                        return [await self._score_alone(prompts[0])]
                    if not self._tried_alone:
                        self._tried_alone = True
                        alone = await self._score_alone(prompts[0])
                        if alone.error is None:
                            self.one_prompt_per_request = True
                            return [alone]
            return [self.failed(prompts[0], str(exc))]
        choices = completions.choices_by_index(response, len(texts))
        share = _Share(response, len(prompts), latency, self.local)
        out, k = [], 0
        for prompt in prompts:
            mine = choices[k : k + len(prompt.continuations)]
            k += len(prompt.continuations)
            out.append(self._from_choices(prompt, mine, share, completions.echoed_logprobs))
        return out

    async def _score_alone(self, prompt: RenderedPrompt) -> AnswerDistribution:
        """One probe with one request per option (for a server that takes one prompt per request)."""
        choices: list[Any | None] = []
        share = _Share(None, 1, 0.0, self.local)
        for c in prompt.continuations:
            try:
                response, latency = await self._call(self._build([prompt.text + c]))
            except CallFailed as exc:
                return self.failed(prompt, str(exc))
            share.add(response, latency)
            choices.append(completions.choices_by_index(response, 1)[0])
        return self._from_choices(prompt, choices, share, completions.echoed_logprobs)

    # --- grammar: one request per option -----------------------------------------------------------------
    async def _score_grammar(self, prompts: Sequence[RenderedPrompt]) -> list[AnswerDistribution]:
        ids: list[list[list[int]]] = []
        errors: list[str | None] = [None] * len(prompts)
        for n, prompt in enumerate(prompts):  # the continuations' own tokens, from the server's tokenizer
            texts = [prompt.text, *(prompt.text + c for c in prompt.continuations)]
            mine: list[list[int]] = []
            try:
                tokens = await asyncio.gather(*(self.caller.tokenize(t) for t in texts))
                for full, c in zip(tokens[1:], prompt.continuations, strict=True):
                    mine.append(completions.continuation_ids(tokens[0], full, c))
            except CallFailed as exc:
                if "/extras/tokenize answered 404" in str(exc):
                    raise Unsupported("tokenizer endpoint (POST /extras/tokenize, llama-cpp-python's server)") from None
                errors[n] = str(exc)
            except ReplyProblem as exc:
                errors[n] = str(exc)
            ids.append(mine)
        choices: list[list[Any | None]] = [[None] * len(p.continuations) for p in prompts]
        usage = _Share(None, len(prompts), 0.0, self.local)
        latencies = [0.0] * len(prompts)
        for j in range(max(len(p.continuations) for p in prompts)):  # option by option: transcripts alternate
            for n, prompt in enumerate(prompts):
                if j >= len(prompt.continuations) or errors[n] is not None:
                    continue
                try:
                    response, latency = await self._call(completions.grammar_request(prompt.text, ids[n][j]))
                except CallFailed as exc:
                    errors[n] = str(exc)
                    continue
                usage.add(response, 0.0)
                latencies[n] += latency
                choices[n][j] = completions.choices_by_index(response, 1)[0]
        out = []
        for n, prompt in enumerate(prompts):
            if errors[n] is not None:
                out.append(self.failed(prompt, errors[n] or ""))
                continue
            counts = {c: len(t) for c, t in zip(prompt.continuations, ids[n], strict=True)}

            def read(choice: Any, _prompt: str, continuation: str, counts: dict[str, int] = counts) -> list[float]:
                return completions.generated_logprobs(choice, continuation, counts[continuation])

            out.append(self._from_choices(prompt, choices[n], usage, read, latencies[n]))
        return out

    def _from_choices(
        self,
        prompt: RenderedPrompt,
        choices: Sequence[Any | None],
        share: _Share,
        read: Any,
        latency: float | None = None,
    ) -> AnswerDistribution:
        token_logprobs: list[list[float]] = []
        for c, choice in zip(prompt.continuations, choices, strict=True):
            if choice is None:
                return self.failed(prompt, f"the server's reply has no choice for option {c.strip()[:40]!r}")
            try:
                token_logprobs.append(read(choice, prompt.text, c))
            except ReplyProblem as exc:
                return self.failed(prompt, str(exc))
        dist = scoring.from_option_logprobs(prompt, token_logprobs)
        return dataclasses.replace(
            dist,
            method=ScoringMethod.COMPLETION,
            extra={**dist.extra, "option_tokens": [len(t) for t in token_logprobs], "completion_logprobs": self.style},
            prompt_tokens=share.prompt_tokens,
            completion_tokens=share.completion_tokens,
            cost_usd=share.cost_usd,
            latency_s=round(share.latency_s if latency is None else latency, 6),
        )


class _Share:
    """A probe's share of a batch's tokens, cost and latency (the batch's totals divided evenly)."""

    def __init__(self, response: Any, n: int, latency: float, local: bool) -> None:
        self.n = max(1, n)
        self._prompt = self._completion = 0
        self._cost: float | None = 0.0 if local else None
        self._latency = 0.0
        if response is not None:
            self.add(response, latency)

    def add(self, response: Any, latency: float) -> None:
        prompt_tokens, completion_tokens = calls.usage_tokens(response)
        self._prompt += prompt_tokens
        self._completion += completion_tokens
        cost = calls.response_cost(response, False)
        if cost is not None:
            self._cost = (self._cost or 0.0) + cost
        self._latency += latency

    @property
    def prompt_tokens(self) -> int:
        return round(self._prompt / self.n)

    @property
    def completion_tokens(self) -> int:
        return round(self._completion / self.n)

    @property
    def cost_usd(self) -> float | None:
        return None if self._cost is None else self._cost / self.n

    @property
    def latency_s(self) -> float:
        return self._latency
