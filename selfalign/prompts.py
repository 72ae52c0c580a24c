"""Rendering a probe (question, options, persona, demonstrations) for base and chat models, per language.

The same content is rendered twice (see :class:`selfalign.models.types.RenderedPrompt`):

- a plain transcript for base models (the embedded Gemma 3 270M), ending in ``Answer:`` so that each
  option's text is scored as the continuation;
- chat messages for chat models, with options labelled A, B, C... and demonstrations as earlier turns.

The scaffolding words ("Question", "Options", "Answer", the persona sentence) come from a template per
language, so that a probe in Arabic is Arabic throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfalign.models.types import LETTERS, RenderedPrompt


@dataclass(frozen=True)
class Template:
    """Scaffolding words of a prompt in one language."""

    question: str
    options: str
    answer: str
    statement_question: str  # the question that introduces a binary statement; {statement} is replaced
    persona: str  # {country} is replaced
    instruction: str
    chat_answer_hint: str  # asks a chat model to reply with the option's letter
    separator: str = " / "


TEMPLATES: dict[str, Template] = {
    "en": Template(
        "Question",
        "Options",
        "Answer",
        'Do you agree or disagree with the following statement? "{statement}"',
        "The answers are given by an average person from {country}.",
        "Answers to a values survey.",
        "Reply with the letter of one option only.",
    ),
    "de": Template(
        "Frage",
        "Antwortmöglichkeiten",
        "Antwort",
        "Stimmen Sie der folgenden Aussage zu oder nicht? „{statement}“",
        "Die Antworten gibt eine durchschnittliche Person aus {country}.",
        "Antworten auf eine Werteumfrage.",
        "Antworten Sie nur mit dem Buchstaben einer Antwortmöglichkeit.",
    ),
    "es": Template(
        "Pregunta",
        "Opciones",
        "Respuesta",
        "¿Está de acuerdo o en desacuerdo con la siguiente afirmación? «{statement}»",
        "Las respuestas las da una persona promedio de {country}.",
        "Respuestas a una encuesta de valores.",
        "Responda solo con la letra de una opción.",
    ),
    "pt": Template(
        "Pergunta",
        "Opções",
        "Resposta",
        "Você concorda ou discorda da seguinte afirmação? “{statement}”",
        "As respostas são dadas por uma pessoa média de {country}.",
        "Respostas a uma pesquisa sobre valores.",
        "Responda apenas com a letra de uma opção.",
    ),
    "ru": Template(
        "Вопрос",
        "Варианты",
        "Ответ",
        "Вы согласны или не согласны со следующим утверждением? «{statement}»",
        "Отвечает типичный житель страны: {country}.",
        "Ответы на опрос о ценностях.",
        "Ответьте только буквой одного варианта.",
    ),
    "zh": Template(
        "问题",
        "选项",
        "回答",
        "您同意还是不同意以下说法？“{statement}”",
        "回答者是一位来自{country}的普通人。",
        "价值观调查的回答。",
        "只回答一个选项的字母。",
        separator=" / ",
    ),
    "ja": Template(
        "質問",
        "選択肢",
        "回答",
        "次の意見に賛成ですか、反対ですか。「{statement}」",
        "回答者は{country}の平均的な人です。",
        "価値観に関する調査への回答。",
        "選択肢の記号を一つだけ答えてください。",
    ),
    "ar": Template(
        "السؤال",
        "الخيارات",
        "الإجابة",
        "هل توافق أو لا توافق على العبارة التالية؟ «{statement}»",
        "يجيب شخص عادي من {country}.",
        "إجابات على استطلاع للقيم.",
        "أجب بحرف خيار واحد فقط.",
    ),
    "hi": Template(
        "प्रश्न",
        "विकल्प",
        "उत्तर",
        "क्या आप निम्नलिखित कथन से सहमत हैं या असहमत? “{statement}”",
        "उत्तर {country} का एक औसत व्यक्ति दे रहा है।",
        "मूल्यों के एक सर्वेक्षण के उत्तर।",
        "केवल एक विकल्प के अक्षर से उत्तर दें।",
    ),
    "tr": Template(
        "Soru",
        "Seçenekler",
        "Cevap",
        "Aşağıdaki ifadeye katılıyor musunuz, katılmıyor musunuz? “{statement}”",
        "Cevapları {country} ülkesinden ortalama bir kişi veriyor.",
        "Bir değerler anketine verilen cevaplar.",
        "Yalnızca bir seçeneğin harfiyle cevap verin.",
    ),
    "sw": Template(
        "Swali",
        "Chaguo",
        "Jibu",
        "Je, unakubali au hukubaliani na kauli ifuatayo? “{statement}”",
        "Majibu yanatolewa na mtu wa kawaida kutoka {country}.",
        "Majibu ya utafiti kuhusu maadili.",
        "Jibu kwa herufi ya chaguo moja tu.",
    ),
}

# Country names in the country's own language, for personas in that language.
NATIVE_COUNTRY_NAMES: dict[str, dict[str, str]] = {
    "de": {"DEU": "Deutschland"},
    "es": {
        "ARG": "Argentina",
        "BOL": "Bolivia",
        "CHL": "Chile",
        "COL": "Colombia",
        "ECU": "Ecuador",
        "GTM": "Guatemala",
        "MEX": "México",
        "NIC": "Nicaragua",
        "PRI": "Puerto Rico",
        "URY": "Uruguay",
        "VEN": "Venezuela",
        "AND": "Andorra",
    },
    "pt": {"BRA": "Brasil"},
    "ru": {"RUS": "Россия", "KAZ": "Казахстан", "KGZ": "Кыргызстан", "UKR": "Украина", "TJK": "Таджикистан"},
    "zh": {"CHN": "中国", "TWN": "台湾", "MAC": "澳门", "SGP": "新加坡"},
    "ja": {"JPN": "日本"},
    "ar": {"EGY": "مصر", "IRQ": "العراق", "JOR": "الأردن", "LBY": "ليبيا", "MAR": "المغرب", "TUN": "تونس"},
    "hi": {"IND": "भारत"},
    "tr": {"TUR": "Türkiye"},
    "sw": {"KEN": "Kenya"},
}


def template(lang: str) -> Template:
    """The scaffolding template of ``lang`` (English for a language without one)."""
    return TEMPLATES.get(lang, TEMPLATES["en"])


def persona_sentence(country_code: str, country_name: str, lang: str) -> str:
    """The persona sentence for a country, in ``lang``."""
    name = NATIVE_COUNTRY_NAMES.get(lang, {}).get(country_code, country_name)
    return template(lang).persona.format(country=name)


@dataclass(frozen=True)
class Item:
    """One question as shown in a prompt: its text (question or statement) and option labels, in a language."""

    text: str
    options: tuple[str, ...]
    lang: str
    binary: bool = False


@dataclass(frozen=True)
class ShownDemonstration:
    """A demonstration as shown: the item and the answer text."""

    item: Item
    answer: str


def _question_line(item: Item) -> str:
    tpl = template(item.lang)
    return tpl.statement_question.format(statement=item.text) if item.binary else item.text


def _text_block(item: Item, answer: str | None) -> str:
    tpl = template(item.lang)
    lines = [
        f"{tpl.question}: {_question_line(item)}",
        f"{tpl.options}: {tpl.separator.join(item.options)}",
        f"{tpl.answer}:" + (f" {answer}" if answer is not None else ""),
    ]
    return "\n".join(lines)


def _chat_question(item: Item) -> str:
    tpl = template(item.lang)
    lettered = "\n".join(f"{LETTERS[i]}. {label}" for i, label in enumerate(item.options))
    return f"{_question_line(item)}\n{lettered}\n{tpl.chat_answer_hint}"


def _letter_of(item: Item, answer: str) -> str:
    """The letter of a demonstration's answer; a distribution in words is shown as it is."""
    if answer in item.options:
        return LETTERS[item.options.index(answer)]
    return answer


def render(
    item: Item,
    *,
    persona: str | None = None,
    demonstrations: Sequence[ShownDemonstration] = (),
    instruction: str | None = None,
) -> RenderedPrompt:
    """Render one probe for base models (transcript) and chat models (messages)."""
    if len(item.options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options can be labelled, got {len(item.options)}")
    tpl = template(item.lang)
    header = [instruction or tpl.instruction]
    if persona:
        header.append(persona)
    blocks = ["\n".join(header)]
    blocks.extend(_text_block(d.item, d.answer) for d in demonstrations)
    blocks.append(_text_block(item, None))
    text = "\n\n".join(blocks)

    system = "\n".join(header)
    messages: list[dict[str, str]] = [{"role": "system", "content": system}]
    for demo in demonstrations:
        messages.append({"role": "user", "content": _chat_question(demo.item)})
        messages.append({"role": "assistant", "content": _letter_of(demo.item, demo.answer)})
    messages.append({"role": "user", "content": _chat_question(item)})
    return RenderedPrompt(
        text=text,
        continuations=tuple(f" {label}" for label in item.options),
        messages=tuple(messages),
        labels=tuple(LETTERS[: len(item.options)]),
        options=item.options,
    )
