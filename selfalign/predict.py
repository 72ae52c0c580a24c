"""``dspy.Predict`` with a fixed kind of adapter, for tasks whose prompt and reply format are the project's own.

A survey answer is a distribution over given options and a translation is one JSON object: neither is
DSPy's default chat format, so their predictors always format through their own adapter class (the
configured ``dspy.settings.adapter`` is used when it is an instance of that class, e.g. a survey adapter
with other settings, and ignored otherwise, since it is set for the user's other modules).
"""

from __future__ import annotations

from typing import Any, ClassVar

import dspy


class AdapterPredict(dspy.Predict):
    """A ``dspy.Predict`` that answers through an instance of :attr:`adapter_class`."""

    adapter_class: ClassVar[type[dspy.Adapter]] = dspy.ChatAdapter

    def adapter(self) -> Any:
        """The adapter calls use: the configured one when it is an ``adapter_class``, else a default one."""
        configured = dspy.settings.adapter
        return configured if isinstance(configured, self.adapter_class) else self.adapter_class()

    def forward(self, **kwargs: Any) -> dspy.Prediction:
        lm, config, signature, demos, kwargs = self._forward_preprocess(**kwargs)
        completions = self.adapter()(lm, lm_kwargs=config, signature=signature, demos=demos, inputs=kwargs)
        return self._forward_postprocess(completions, signature, **kwargs)

    async def aforward(self, **kwargs: Any) -> dspy.Prediction:
        lm, config, signature, demos, kwargs = self._forward_preprocess(**kwargs)
        completions = await self.adapter().acall(lm, lm_kwargs=config, signature=signature, demos=demos, inputs=kwargs)
        return self._forward_postprocess(completions, signature, **kwargs)


def call_lm(lm: Any, messages: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    """``lm(messages=...)`` as DSPy's own adapters call it (the call path DSPy 3.4 keeps for adapters)."""
    from dspy.clients._deprecation import adapter_message_call  # pinned DSPy < 3.5

    with adapter_message_call(lm, messages):
        return list(lm(messages=messages, **kwargs))
