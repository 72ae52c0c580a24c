"""The survey adapter: how a :class:`~selfalign.signatures.SurveyAnswer` call becomes an answer distribution.

:class:`SurveyAdapter` is a ``dspy.Adapter``. For one predictor call it

1. renders the signature's inputs and demonstrations with the one renderer (:func:`selfalign.prompts.render`):
   a plain transcript for base models (each option scored as the continuation of ``Answer:``) and chat
   messages for chat models (lettered options, demonstrations as earlier turns), in the prompt's language;
2. asks the LM for the options' probabilities:

   - an LM from :func:`selfalign.models.dspy_lm` gets one scoring request (``selfalign_request``) that travels
     through ``dspy.LM`` and LiteLLM to the route's :class:`~selfalign.models.client.ModelClient`, which
     scores it as it scores every prompt (exact option scoring for the embedded model, ``top_logprobs`` of the
     answer letter for chat models, sampling where a model has no log-probabilities; one disk cache) and sends
     the distribution back in the reply's ``logprobs``; the messages DSPy records (``dspy.inspect_history``)
     are what the model is shown: the transcript for a base model, the chat messages otherwise;
   - any other DSPy LM is asked for the answer letter's ``top_logprobs``; an LM whose replies carry none is
     sampled instead (``n_samples`` answers at ``temperature``), and the distribution records it
     (``extra["fallback_from"] = "logprob"``);
   - ``SurveyAdapter(method="verbalized")`` asks any LM (a selfalign one through its client, which caches it)
     to state the share of respondents per option instead (:mod:`selfalign.models.verbalized`);
3. returns ``answer`` (the most likely option, None when the call failed or the answer was off-format) and
   ``distribution`` (the :class:`~selfalign.models.types.AnswerDistribution` as JSON-ready data).

A failed call is never an exception here: the distribution carries the error (one line, keys redacted), so a
run counts it as a failed probe and an optimizer scores it as a miss.

The runner renders with :meth:`SurveyAdapter.render` too and scores many prompts in one batch through the same
client, so a program called one probe at a time and a batched run give the same numbers from the same cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import dspy

from selfalign.errors import SelfAlignError
from selfalign.models import scoring, verbalized
from selfalign.models.config import check_setting
from selfalign.models.dspy_bridge import route_client
from selfalign.models.redact import one_line
from selfalign.models.types import AnswerDistribution, RenderedPrompt, ScoringMethod, dist_from_json, dist_to_json
from selfalign.models.wire import DIST_KEY, REQUEST_PARAM, encode_prompt
from selfalign.predict import call_lm
from selfalign.prompts import DEFAULT_TEMPLATE, Item, ShownDemonstration, render
from selfalign.signatures import DEFAULT_INSTRUCTIONS

_NO_LOGPROBS = "_selfalign_no_logprobs"  # set on a foreign LM whose replies carried no log-probabilities
ANSWER_MAX_TOKENS = 32


def _item(fields: Mapping[str, Any], default_lang: str, what: str) -> Item:
    missing = [name for name in ("question", "options") if not fields.get(name)]
    if missing:
        raise SelfAlignError(f"{what} lacks {', '.join(missing)} (AlignmentProgram renders survey questions)")
    options = fields["options"]
    if isinstance(options, str) or not isinstance(options, Sequence):
        raise SelfAlignError(f"{what}: options must be a list of strings, not {type(options).__name__}")
    return Item(
        str(fields["question"]),
        tuple(str(o) for o in options),
        str(fields.get("language") or default_lang),
        binary=bool(fields.get("statement")),
    )


def _messages_of(out: Any) -> str:
    if isinstance(out, dict):
        return str(out.get("text") or "")
    return str(out or "")


class SurveyAdapter(dspy.Adapter):
    """Renders survey questions for base and chat models and turns the LM's reply into a distribution.

    ``n_samples`` and ``temperature`` are used when a foreign LM (not built by ``dspy_lm``) gives no
    log-probabilities; ``top_logprobs`` is how many it is asked for. Selfalign LMs use their client's settings.
    ``method`` (e.g. ``"verbalized"``) overrides how every LM is read: a selfalign LM's client scores with it,
    a foreign LM is asked accordingly (``logprob``, ``sample``, ``greedy`` or ``verbalized``).
    """

    def __init__(
        self,
        *,
        n_samples: int = 20,
        temperature: float = 1.0,
        top_logprobs: int = 20,
        method: ScoringMethod | str | None = None,
        callbacks: Any = None,
    ) -> None:
        super().__init__(callbacks=callbacks)
        self.n_samples = n_samples
        self.temperature = temperature
        self.top_logprobs = top_logprobs
        self.method: ScoringMethod | None = check_setting("method", method, "SurveyAdapter: ")
        if self.method is ScoringMethod.COMPLETION:
            raise SelfAlignError(
                "SurveyAdapter: method 'completion' is chosen per model (models.toml, or dspy_lm(model, "
                "method='completion')), not by the adapter"
            )

    # --- rendering ------------------------------------------------------------------------------------
    def render(
        self, signature: type[dspy.Signature], demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any]
    ) -> RenderedPrompt:
        """The prompt for ``inputs`` after ``demos``: transcript, continuations, chat messages, labels."""
        item = _item(inputs, "en", "the survey question")
        shown = []
        for n, demo in enumerate(demos, start=1):
            if demo.get("answer") is None:
                raise SelfAlignError(f"demonstration {n} has no answer")
            shown.append(ShownDemonstration(_item(demo, item.lang, f"demonstration {n}"), str(demo["answer"])))
        instructions = signature.instructions
        custom = instructions if instructions and instructions != DEFAULT_INSTRUCTIONS else None
        persona = str(inputs.get("respondent") or "") or None
        template = str(inputs.get("template") or DEFAULT_TEMPLATE)  # demonstrations are shown with it too
        return render(item, persona=persona, demonstrations=shown, instruction=custom, template=template)

    def format(
        self, signature: type[dspy.Signature], demos: list[dict[str, Any]], inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The chat messages of the prompt (a base model is shown :meth:`render`'s transcript instead)."""
        return [dict(m) for m in self.render(signature, demos, inputs).messages]

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        """A free-text reply as the answer (options are matched by :meth:`__call__`, which knows them)."""
        return {"answer": completion.strip()}

    # --- calling ----------------------------------------------------------------------------------------
    def __call__(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: type[dspy.Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Render, ask ``lm`` for the options' probabilities, return ``[{"answer", "distribution"}]``."""
        prompt = self.render(signature, demos, inputs)
        dist = self.score(lm, prompt)
        return [self.output(dist)]

    async def acall(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: type[dspy.Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Async :meth:`__call__` (the model call runs in a worker thread)."""
        return await asyncio.to_thread(self.__call__, lm, lm_kwargs, signature, demos, inputs)

    @staticmethod
    def output(dist: AnswerDistribution) -> dict[str, Any]:
        """The predictor's outputs for a distribution: the most likely option and the distribution's data."""
        best = dist.argmax
        data = dist_to_json(dist)
        data["cached"] = dist.cached
        return {"answer": dist.options[best] if best is not None else None, "distribution": data}

    def score(self, lm: Any, prompt: RenderedPrompt) -> AnswerDistribution:
        """The distribution ``lm`` gives over ``prompt``'s options (a failed call gives ``error``, never raises)."""
        client = route_client(lm)
        try:
            if client is not None:
                return self._score_routed(lm, prompt, client.reads_transcript(self.method))
            if self.method is not None and self.method is not ScoringMethod.LOGPROB:
                return self._score_foreign_as(lm, prompt, self.method)
            return self._score_foreign(lm, prompt)
        except SelfAlignError:
            raise
        except Exception as exc:  # the LM could not be reached or answered nonsense: a failed probe
            return AnswerDistribution(
                options=prompt.options, probs=(), method=self.method or ScoringMethod.LOGPROB, error=one_line(exc)
            )

    def _score_routed(self, lm: Any, prompt: RenderedPrompt, transcript: bool) -> AnswerDistribution:
        if self.method is ScoringMethod.VERBALIZED:
            shown = verbalized.messages(prompt)
        elif transcript:
            shown = [{"role": "user", "content": prompt.text}]
        else:
            shown = [dict(m) for m in prompt.messages]
        request: dict[str, Any] = {"kind": "score", "prompt": encode_prompt(prompt)}
        if self.method is not None:
            request["method"] = self.method.value
        outputs = call_lm(lm, shown, max_tokens=1, logprobs=True, **{REQUEST_PARAM: request})
        data = outputs[0].get("logprobs") if outputs and isinstance(outputs[0], dict) else None
        if not isinstance(data, dict) or DIST_KEY not in data:
            raise SelfAlignError(f"{lm.model}: the reply carries no answer distribution")
        values = dict(data[DIST_KEY])
        return dist_from_json(values, cached=bool(data[DIST_KEY].get("cached", False)))

    def _score_foreign(self, lm: Any, prompt: RenderedPrompt) -> AnswerDistribution:
        messages = [dict(m) for m in prompt.messages]
        if not getattr(lm, _NO_LOGPROBS, False):
            outputs = call_lm(
                lm, messages, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=self.top_logprobs
            )
            first = outputs[0] if outputs else None
            pairs = scoring.first_token_top_logprobs(first.get("logprobs") if isinstance(first, dict) else None)
            if pairs:
                return scoring.from_top_logprobs(prompt, pairs, raw_answer=_messages_of(first))
            setattr(lm, _NO_LOGPROBS, True)  # remember: this LM's replies carry no log-probabilities
        dist = self._sample(lm, prompt, messages)
        return dataclasses.replace(dist, extra={**dist.extra, "fallback_from": "logprob"})

    def _sample(self, lm: Any, prompt: RenderedPrompt, messages: list[dict[str, Any]]) -> AnswerDistribution:
        """The distribution of ``n_samples`` free-text answers of a foreign LM, matched to the options."""
        outputs = call_lm(lm, messages, max_tokens=ANSWER_MAX_TOKENS, temperature=self.temperature, n=self.n_samples)
        return scoring.from_samples(prompt, [_messages_of(o) for o in outputs][: self.n_samples])

    def _score_foreign_as(self, lm: Any, prompt: RenderedPrompt, method: ScoringMethod) -> AnswerDistribution:
        """A foreign LM read with a forced method: its free-text answers matched, or its stated shares parsed."""
        if method is ScoringMethod.VERBALIZED:
            limit = verbalized.max_tokens_for(prompt)
            outputs = call_lm(lm, verbalized.messages(prompt), max_tokens=limit, temperature=0.0)
            return verbalized.from_reply(prompt, _messages_of(outputs[0]) if outputs else "")
        messages = [dict(m) for m in prompt.messages]
        if method is ScoringMethod.GREEDY:
            outputs = call_lm(lm, messages, max_tokens=ANSWER_MAX_TOKENS, temperature=0.0)
            return scoring.from_greedy(prompt, _messages_of(outputs[0]) if outputs else "")
        return self._sample(lm, prompt, messages)
