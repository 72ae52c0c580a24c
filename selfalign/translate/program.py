"""Translating one unit as a DSPy program: a signature, an adapter that writes the translator's prompt, and a
module that parses the reply and asks once more with a correction turn when it is off-format.

:class:`SurveyTranslator` is a ``dspy.Module``: its predictor (:class:`TranslatePredict`, a ``dspy.Predict`` of
:class:`TranslateSurveyText`) answers through :class:`TranslationAdapter`, which sends the model a system
message saying what to translate and the unit's JSON object, and takes the reply text back. The LM is DSPy's
(``lm=`` of the call, or ``dspy.settings.lm``); :func:`selfalign.models.dspy_lm` gives one whose calls use
selfalign's cache and retries.
"""

from __future__ import annotations

import json
from typing import Any

import dspy

from selfalign.errors import ModelError
from selfalign.models.redact import one_line
from selfalign.predict import AdapterPredict, call_lm
from selfalign.translate.units import Unit

MAX_TOKENS_CAP = 8192


class OffFormatReply(ValueError):
    """A model reply that is not the requested JSON object; the message says what is wrong."""


class TranslateSurveyText(dspy.Signature):
    """Translate the values of a survey questionnaire's JSON object into another language, keeping its keys."""

    source_language: str = dspy.InputField(desc="the language the object is written in")
    target_language: str = dspy.InputField(desc="the language to translate into")
    target_code: str = dspy.InputField(desc="the target language's code")
    kind: str = dspy.InputField(desc="what the object holds: question, labels or words")
    source: str = dspy.InputField(desc="the JSON object to translate")
    context: str = dspy.InputField(desc="the question a label set belongs to (not translated), or empty")
    earlier_reply: str = dspy.InputField(desc="an earlier reply that could not be used, or empty")
    problem: str = dspy.InputField(desc="what was wrong with the earlier reply, or empty")
    translation: str = dspy.OutputField(desc="the translated JSON object, with the same keys")


_ROLES = {
    "question": (
        "'question' is a survey question, 'statement' (if present) a first-person statement that respondents "
        "agree or disagree with, and 'options' (if present) the question's answer options in order."
    ),
    "labels": (
        "'options' are the answer options, in order, of the survey question given in 'context'. Use the "
        "context to choose words and grammatical forms, but translate only 'options' and leave 'context' out "
        "of your reply."
    ),
    "words": (
        "'agree' and 'disagree' are the short answers a respondent gives to agree or to disagree with a "
        "statement (e.g. 'I agree'); keep them short."
    ),
}


def inputs_for(unit: Unit, source_name: str, target_name: str, target_code: str) -> dict[str, Any]:
    """The :class:`TranslateSurveyText` inputs that ask for ``unit``."""
    body = dict(unit.payload)
    if unit.context is not None:
        body = {"context": unit.context, **body}
    return {
        "source_language": source_name,
        "target_language": target_name,
        "target_code": target_code,
        "kind": unit.kind,
        "source": json.dumps(body, ensure_ascii=False, indent=1),
        "context": unit.context or "",
        "earlier_reply": "",
        "problem": "",
    }


def messages_for(unit: Unit, source_name: str, target_name: str, target_code: str) -> list[dict[str, str]]:
    """The chat messages that ask the model to translate ``unit``."""
    return TranslationAdapter().format(TranslateSurveyText, [], inputs_for(unit, source_name, target_name, target_code))


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped.strip()


def parse_reply(text: str, unit: Unit) -> dict[str, Any]:
    """The translated fields of ``unit`` from a model reply; raises :class:`OffFormatReply` saying what is wrong.

    Accepts the JSON object alone, in a code fence, or surrounded by text (the first object that parses is
    used); ``options`` may come back as a list or as an object with one entry per option. A question or the
    answer words sent back unchanged count as off-format (not translated).
    """
    body = _strip_fences(text)
    data = _first_object(body)
    result: dict[str, Any] = {}
    for key, source in unit.payload.items():
        value = data.get(key)
        if key == "options":
            if isinstance(value, dict):
                value = list(value.values())
            if not isinstance(value, list) or len(value) != len(source):
                got = len(value) if isinstance(value, list) else "no"
                raise OffFormatReply(f"'options' must list {len(source)} labels, got {got}")
            if any(not isinstance(v, str) or not v.strip() for v in value):
                raise OffFormatReply("an option label is empty or not a string")
            result[key] = [v.strip() for v in value]
        else:
            if not isinstance(value, str) or not value.strip():
                raise OffFormatReply(f"'{key}' is missing or empty")
            result[key] = value.strip()
    # a wording that comes back as it was sent was not translated (labels may be names, left as they are)
    if unit.kind != "labels" and all(_same(result[k], v) for k, v in unit.payload.items() if isinstance(v, str)):
        raise OffFormatReply("the reply repeats the source text untranslated")
    return result


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _first_object(body: str) -> dict[str, Any]:
    """The first JSON object in ``body`` (text before or after it is ignored)."""
    decoder = json.JSONDecoder()
    start = body.find("{")
    if start < 0:
        raise OffFormatReply("the reply holds no JSON object")
    problem = ""
    while start >= 0:
        try:
            data, _ = decoder.raw_decode(body, start)
        except json.JSONDecodeError as exc:
            problem = problem or exc.msg
        else:
            if isinstance(data, dict):
                return data
        start = body.find("{", start + 1)
    raise OffFormatReply(f"the reply is not valid JSON ({problem})")


def correction_turn(raw: str, problem: str, keys: list[str], n_options: int) -> list[dict[str, str]]:
    """The turns appended for the one retry of an off-format reply."""
    shown = ", ".join(f"'{k}'" for k in keys)
    need = f" and exactly {n_options} option labels" if n_options else ""
    return [
        {"role": "assistant", "content": raw},
        {
            "role": "user",
            "content": f"That reply could not be used: {problem}. Reply again with only the JSON object, with "
            f"the keys {shown}{need}.",
        },
    ]


class TranslationAdapter(dspy.Adapter):
    """Writes the translator's prompt: a system message (what to translate, how) and the JSON object as the
    user's message; an earlier off-format reply and what was wrong with it follow as two more turns."""

    def format(
        self, signature: type[dspy.Signature], demos: list[dict[str, Any]], inputs: dict[str, Any]
    ) -> list[dict[str, str]]:
        body = json.loads(inputs["source"])
        payload_keys = [k for k in body if k != "context"]
        keys = ", ".join(f"'{k}'" for k in payload_keys)
        target = inputs["target_language"]
        system = (
            "You are a professional translator of social-science survey questionnaires. Translate from "
            f"{inputs['source_language']} into {target} (language code {inputs['target_code']}). Write natural, "
            f"neutral {target}, as a native speaker would in a printed survey, keeping the exact meaning, the "
            f"scale direction and any negation. You receive a JSON object; {_ROLES[inputs['kind']]} Translate the "
            f"values of {keys}, keep the keys and the number and order of list items, keep numbers and proper "
            "names as they are, and reply with the translated JSON object only, without any explanation."
        )
        messages = [{"role": "system", "content": system}, {"role": "user", "content": inputs["source"]}]
        if inputs.get("earlier_reply"):
            n_options = len(body.get("options") or ())
            messages += correction_turn(inputs["earlier_reply"], inputs["problem"], payload_keys, n_options)
        return messages

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        return {"translation": completion}

    def __call__(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: type[dspy.Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        messages = self.format(signature, demos, inputs)
        outputs = call_lm(lm, messages, **lm_kwargs)
        text = outputs[0].get("text") if outputs and isinstance(outputs[0], dict) else (outputs[0] if outputs else "")
        return [self.parse(signature, str(text or ""))]


class TranslatePredict(AdapterPredict):
    """``dspy.Predict`` of :class:`TranslateSurveyText` that always answers through a :class:`TranslationAdapter`."""

    adapter_class = TranslationAdapter

    def __init__(self, signature: type[dspy.Signature] = TranslateSurveyText, **config: Any) -> None:
        super().__init__(signature, **config)


class SurveyTranslator(dspy.Module):
    """Translates one :class:`Unit`; an off-format reply is asked again once, with a correction turn."""

    def __init__(self) -> None:
        super().__init__()
        self.translate = TranslatePredict()

    def forward(
        self, unit: Unit, source_name: str, target_name: str, target_code: str, lm: Any = None
    ) -> dict[str, Any]:
        """The unit's translated fields; raises :class:`OffFormatReply` (twice off-format) or ModelError."""
        inputs = inputs_for(unit, source_name, target_name, target_code)
        size = len(inputs["source"])
        config = {"max_tokens": min(MAX_TOKENS_CAP, 256 + 2 * size), "temperature": 0.0}
        raw = self._ask(inputs, config, lm)
        try:
            return parse_reply(raw, unit)
        except OffFormatReply as first:
            raw = self._ask(inputs | {"earlier_reply": raw, "problem": str(first)}, config, lm)
            try:
                return parse_reply(raw, unit)
            except OffFormatReply as second:
                raise OffFormatReply(f"off-format reply twice ({second})") from None

    def _ask(self, inputs: dict[str, Any], config: dict[str, Any], lm: Any) -> str:
        try:
            return str(self.translate(**inputs, config=config, lm=lm).translation or "")
        except Exception as exc:  # the model call failed after the client's retries
            raise ModelError(one_line(exc)) from None
