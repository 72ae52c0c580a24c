"""Learning how demonstrations are selected: ``selfalign optimize`` and compiled programs.

:func:`optimize` searches, on the dev split of questions only, how self-alignment demonstrations are chosen
for a country (or pooled countries) so that the model's answers agree best with the country's (see
:mod:`selfalign.optimize.search` for the stages and :mod:`selfalign.optimize.dspy_opt` for DSPy's
optimizers), then scores the chosen program once on the test split and saves it as a *compiled program*:
``programs/compiled/<name>/program.json`` (DSPy's save format) plus ``meta.json``. Compiled programs load
by name wherever programs are named (``compiled:<name>`` in ``ask``, ``compare`` and ``eval``)::

    from selfalign.optimize import optimize, load_compiled
    result = optimize("EGY", budget=1000)
    program = load_compiled(result.name, survey="wvs7", model="selfalign/gemma-3-270m")
"""

from __future__ import annotations

from selfalign.optimize.compile import DEFAULT_BUDGET, OptimizeResult, default_name, optimize
from selfalign.optimize.evaluate import BudgetExceeded, Evaluator, Item, Score
from selfalign.optimize.search import MIN_DEV_QUESTIONS
from selfalign.optimize.space import DEFAULT_STAGES, STAGES, Candidate, SearchSpace, paper_default
from selfalign.programs.compiled import (
    bundled_compiled_dir,
    compiled_programs,
    default_save_dir,
    find_compiled,
    load_compiled,
    save_compiled,
)

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_STAGES",
    "MIN_DEV_QUESTIONS",
    "STAGES",
    "BudgetExceeded",
    "Candidate",
    "Evaluator",
    "Item",
    "OptimizeResult",
    "Score",
    "SearchSpace",
    "bundled_compiled_dir",
    "compiled_programs",
    "default_name",
    "default_save_dir",
    "find_compiled",
    "load_compiled",
    "optimize",
    "paper_default",
    "save_compiled",
]
