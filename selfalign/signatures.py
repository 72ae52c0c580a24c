"""The DSPy signature of a survey answer, and the fields a demonstration of it carries."""

from __future__ import annotations

import dspy


class SurveyAnswer(dspy.Signature):
    """Answer the survey question as the described respondent would, choosing exactly one of the options."""

    question: str = dspy.InputField(desc="the survey question, or a statement to agree or disagree with")
    options: list[str] = dspy.InputField(desc="the answer options, in the order shown")
    respondent: str = dspy.InputField(desc="who is answering (a persona), or empty")
    language: str = dspy.InputField(desc="the language of the prompt (ISO 639-1 code); its scaffolding follows it")
    statement: bool = dspy.InputField(desc="true when question is a statement to agree or disagree with")
    template: str = dspy.InputField(
        default="default", desc="the prompt template: the scaffolding around question, options and answer"
    )
    answer: str = dspy.OutputField(desc="exactly one of the options")


DEFAULT_INSTRUCTIONS = SurveyAnswer.instructions

INPUT_FIELDS: tuple[str, ...] = ("question", "options", "respondent", "language", "statement", "template")
"""The signature's inputs, in order."""

DEMO_FIELDS: tuple[str, ...] = (
    "question_id",
    "answer_code",
    "country",
    "question",
    "options",
    "language",
    "statement",
    "answer",
    "augmented",
)
"""What a stored demonstration keeps: the rendered fields (question, options, language, statement, answer) and,
when known, the survey question, the answer's option code and whose answer it is (so that a program can show
it again in another language or protocol)."""
