"""selfalign: measure and improve the alignment of LLM answers with countries' survey answers.

Heavy parts (LiteLLM, DSPy, llama.cpp) are imported lazily by the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

DEFAULT_MODEL = "selfalign/gemma-3-270m"
DEFAULT_SURVEY = "wvs7"

__all__ = ["DEFAULT_MODEL", "DEFAULT_SURVEY", "__version__"]
