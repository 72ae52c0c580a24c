"""Alignment programs: DSPy modules that answer survey questions as a country.

A program is a :class:`AlignmentProgram` (a ``dspy.Module``) built from parts: :class:`PersonaPart`,
:class:`DemonstrationsPart` (self-alignment demonstrations chosen by the retriever) and
:class:`RankedDemonstrationsPart` (a learned ranking) and :class:`LearnedDemonstrationsPart` (learned weights over
the evidence about each candidate). :class:`ZeroShot`, :class:`Persona`, :class:`SelfAlign`
and :class:`PersonaSelfAlign` are the four named compositions::

    import dspy
    from selfalign.models import dspy_lm
    from selfalign.programs import SelfAlign

    dspy.configure(lm=dspy_lm("selfalign/gemma-3-270m"))       # optional: the embedded model is the default
    prediction = SelfAlign(strategy="chrf", k=3)(question_id="Q164", country="NGA")
    prediction.answer, prediction.distribution.probs

Named programs (``programs/*.toml``) and compiled ones load with :func:`load_program`.
"""

from __future__ import annotations

from selfalign.programs.catalog import (
    COMPILED_PREFIX,
    ProgramSpec,
    available_program_names,
    load_program,
    named_programs,
    program_from_config,
    programs_dir,
)
from selfalign.programs.examples import JS_TIE_WEIGHT, dev_pool, js_metric, metric, survey_examples
from selfalign.programs.modules import (
    AlignmentProgram,
    Persona,
    PersonaSelfAlign,
    SelfAlign,
    SurveyPredict,
    ZeroShot,
    resolve_lm,
)
from selfalign.programs.parts import (
    DemonstrationsPart,
    LearnedDemonstrationsPart,
    Part,
    PersonaPart,
    PromptPieces,
    RankedDemonstrationsPart,
    part_from_config,
)
from selfalign.programs.probes import PreparedProbe, Probe, ProgramContext, default_context, make_probe
from selfalign.signatures import DEFAULT_INSTRUCTIONS, SurveyAnswer

__all__ = [
    "COMPILED_PREFIX",
    "DEFAULT_INSTRUCTIONS",
    "JS_TIE_WEIGHT",
    "AlignmentProgram",
    "DemonstrationsPart",
    "LearnedDemonstrationsPart",
    "Part",
    "Persona",
    "PersonaPart",
    "PersonaSelfAlign",
    "PreparedProbe",
    "Probe",
    "ProgramContext",
    "ProgramSpec",
    "PromptPieces",
    "RankedDemonstrationsPart",
    "SelfAlign",
    "SurveyAnswer",
    "SurveyPredict",
    "ZeroShot",
    "available_program_names",
    "default_context",
    "dev_pool",
    "js_metric",
    "load_program",
    "make_probe",
    "metric",
    "named_programs",
    "part_from_config",
    "program_from_config",
    "programs_dir",
    "resolve_lm",
    "survey_examples",
]
