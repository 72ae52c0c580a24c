"""Model strings, configured aliases and what each model can do.

A model is addressed by a LiteLLM model string (``openai/gpt-4o-mini``, ``ollama/llama3.1``,
``hosted_vllm/...``, ``anthropic/...``, ``openai/<name>`` with an ``api_base``) or by an alias defined in a
TOML config file (default ``~/.config/selfalign/models.toml``, overridden by ``SELFALIGN_CONFIG``)::

    [models.mini]
    model = "openai/gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"      # the key is read from this variable at call time, never stored
    supports_logprobs = true

    [models.local]
    model = "openai/gemma"
    api_base = "http://127.0.0.1:8080/v1"

    [models.farm]                         # several deployments load-balanced by litellm.Router
    supports_logprobs = true
    deployments = [
      { model = "hosted_vllm/llama", api_base = "http://10.0.0.1:8000/v1" },
      { model = "hosted_vllm/llama", api_base = "http://10.0.0.2:8000/v1", api_key_env = "FARM_KEY" },
    ]

    [models.base]                         # a base model behind an engine: options scored as continuations
    model = "hosted_vllm/google/gemma-3-270m"
    api_base = "http://127.0.0.1:8000/v1"
    method = "completion"                 # logprob, completion, sample, greedy, verbalized
    batch_size = 8                        # probes per completions request
    timeout_s = 120                       # per request
    max_retries = 2

An alias may also set ``completion_logprobs`` (``echo``, ``prompt_logprobs`` or ``grammar``, see
:mod:`selfalign.models.completions`) and ``max_concurrency``. Arguments given to the client win over the
alias's values. Nothing here imports LiteLLM, so listing models stays fast (only a provider prefix that is
not in LiteLLM's provider list as written in its sources makes it look further).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfalign import DEFAULT_MODEL
from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.models.completions import STYLES as COMPLETION_STYLES
from selfalign.models.types import ScoringMethod
from selfalign.models.wire import EMBEDDED_MODELS, EMBEDDED_PROVIDER

CONFIG_ENV = "SELFALIGN_CONFIG"
_SECRET_KEYS = {"api_key", "key", "token", "secret", "password", "aws_secret_access_key"}
SETTING_KEYS = ("method", "timeout_s", "max_retries", "batch_size", "completion_logprobs", "max_concurrency")
"""Client settings an alias may set (the same names as ModelClient's keyword arguments)."""
_ALLOWED_KEYS = {
    "model",
    "api_base",
    "api_key_env",
    "supports_logprobs",
    "deployments",
    "description",
    "params",
    *SETTING_KEYS,
}
_DEPLOYMENT_KEYS = {"model", "api_base", "api_key_env", "params"}

# Providers whose chat endpoints return token log-probabilities (OpenAI-compatible servers).
_LOGPROB_PROVIDERS = {
    "openai",
    "azure",
    "hosted_vllm",
    "vllm",
    "text-completion-openai",
    "together_ai",
    "fireworks_ai",
    "deepinfra",
    "openrouter",
    "lm_studio",
    "llamafile",
}
# OpenAI reasoning models reject logprobs.
_NO_LOGPROB_MODEL_PREFIXES = ("o1", "o3", "o4", "gpt-5")


class ModelConfigError(SelfAlignError, ValueError):
    """A models config file that cannot be used: names the file and the problem."""


def _bad(where: str, name: str, value: Any, wanted: str) -> SelfAlignError:
    return SelfAlignError(f"{where}{name} = {value!r} is not {wanted}")


def check_setting(name: str, value: Any, where: str = "") -> Any:
    """A client setting (one of :data:`SETTING_KEYS`, or ``n_samples``/``temperature``) checked and normalised.

    Raises :class:`~selfalign.errors.SelfAlignError` (one line naming ``where``, the setting, the value and
    what it must be) for a bad value; None passes through (not set).
    """
    if value is None:
        return None
    if name == "method":
        try:
            return ScoringMethod(str(value))
        except ValueError:
            raise UnknownChoiceError("scoring method", str(value), [m.value for m in ScoringMethod]) from None
    if name == "completion_logprobs":
        if value not in COMPLETION_STYLES:
            raise UnknownChoiceError("completion_logprobs", str(value), COMPLETION_STYLES)
        return str(value)
    if name in ("timeout_s", "temperature"):
        low = 0.0 if name == "temperature" else 1e-3
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < low:
            unit = " (seconds)" if name == "timeout_s" else ""
            raise _bad(where, name, value, f"a number of at least {low:g}{unit}")
        if name == "timeout_s" and value > 86_400:
            raise _bad(where, name, value, "at most 86400 seconds")
        return float(value)
    limits = {"max_retries": (0, 100), "batch_size": (1, 4096), "max_concurrency": (1, 4096), "n_samples": (1, 1000)}
    if name in limits:
        low, high = limits[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _bad(where, name, value, f"a whole number from {low} to {high}")
        return int(value)
    raise UnknownChoiceError("client setting", name, [*SETTING_KEYS, "n_samples", "temperature"])


@dataclass(frozen=True)
class Deployment:
    """One endpoint of a model: a LiteLLM model string, an optional base URL and the name of its key variable."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: what to send to LiteLLM and what the model can do.

    ``name`` is what the user wrote (an alias or a model string); ``model`` the LiteLLM model string;
    ``deployments`` has more than one entry when the alias load-balances several endpoints (litellm.Router).
    No key is ever held here: ``api_key_env`` names the environment variable read at call time.
    """

    name: str
    model: str
    provider: str
    api_base: str | None = None
    api_key_env: str | None = None
    supports_logprobs: bool = False
    is_embedded: bool = False
    source: str = "direct"  # "embedded", "config" or "direct"
    deployments: tuple[Deployment, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)  # client settings from the alias (SETTING_KEYS)

    @property
    def uses_router(self) -> bool:
        """True when calls go through litellm.Router (several deployments)."""
        return len(self.deployments) > 1

    def identity(self) -> dict[str, Any]:
        """What identifies this model in cache keys: model strings and bases, never keys."""
        if self.deployments:
            deployments = sorted((d.model, d.api_base or "") for d in self.deployments)
            return {"model": self.model, "deployments": deployments}
        return {"model": self.model, "api_base": self.api_base or ""}


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``selfalign models``."""

    name: str
    model: str
    provider: str
    api_base: str | None
    supports_logprobs: bool
    source: str
    deployments: int
    is_default: bool
    description: str = ""


def provider_of(model: str) -> str:
    """The LiteLLM provider prefix of a model string (``openai`` for ``openai/gpt-4o``; ``""`` when bare)."""
    return model.split("/", 1)[0] if "/" in model else ""


def _check_api_base(api_base: Any, message: str) -> None:
    """Raise :class:`ModelConfigError` with ``message`` unless ``api_base`` is absent or an http(s) URL."""
    if api_base is not None and (not isinstance(api_base, str) or not re.match(r"^https?://[^\s/]+", api_base)):
        raise ModelConfigError(message)


def guess_supports_logprobs(model: str, api_base: str | None = None) -> bool:
    """Whether a model's chat endpoint is expected to return top log-probabilities.

    A guess from the provider (OpenAI-compatible servers do, Anthropic and Gemini do not); a config entry's
    ``supports_logprobs`` overrides it, and the client falls back to sampling when a reply has none.
    """
    if model in EMBEDDED_MODELS:
        return True
    provider = provider_of(model)
    name = model.split("/", 1)[1] if provider else model
    if not provider:
        provider = "openai" if name.startswith(("gpt-", "o1", "o3", "o4")) else ""
    if provider in ("openai", "azure") and name.startswith(_NO_LOGPROB_MODEL_PREFIXES):
        return False
    return provider in _LOGPROB_PROVIDERS


def embedded_spec(name: str = DEFAULT_MODEL) -> ModelSpec:
    """The spec of the embedded model (Gemma 3 270M in-process through llama.cpp)."""
    return ModelSpec(
        name=name,
        model=name,
        provider=EMBEDDED_PROVIDER,
        supports_logprobs=True,
        is_embedded=True,
        source="embedded",
        description="Gemma 3 270M (Q4_K_M) in-process via llama.cpp; exact option scoring",
    )


def config_path(path: str | Path | None = None) -> Path:
    """The models config file: ``path``, else ``$SELFALIGN_CONFIG``, else ``~/.config/selfalign/models.toml``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.config/selfalign/models.toml").expanduser()


def _check_no_secret(path: Path, where: str, table: Mapping[str, Any]) -> None:
    for key in table:
        if key.lower() in _SECRET_KEYS:
            raise ModelConfigError(
                f"{path}: {where} sets {key!r}; keys never go into the config file: name the environment "
                "variable that holds it with api_key_env"
            )


def _deployment(path: Path, name: str, raw: Any) -> Deployment:
    if not isinstance(raw, Mapping):
        raise ModelConfigError(f"{path}: models.{name}.deployments entries must be tables")
    _check_no_secret(path, f"a deployment of models.{name}", raw)
    unknown = set(raw) - _DEPLOYMENT_KEYS
    if unknown:
        raise ModelConfigError(f"{path}: models.{name}.deployments has unknown keys {sorted(unknown)}")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise ModelConfigError(f"{path}: each deployment of models.{name} needs a model string")
    params = raw.get("params", {})
    if not isinstance(params, Mapping):
        raise ModelConfigError(f"{path}: models.{name}.deployments params must be a table")
    _check_no_secret(path, f"models.{name} deployment params", params)
    api_base = raw.get("api_base")
    _check_api_base(api_base, f"{path}: a deployment of models.{name} has api_base = {api_base!r}, not an http(s) URL")
    return Deployment(model=model, api_base=api_base, api_key_env=raw.get("api_key_env"), params=dict(params))


def _spec_from_table(path: Path, name: str, table: Any) -> ModelSpec:
    if not isinstance(table, Mapping):
        raise ModelConfigError(f"{path}: models.{name} must be a table")
    _check_no_secret(path, f"models.{name}", table)
    unknown = set(table) - _ALLOWED_KEYS
    if unknown:
        raise ModelConfigError(
            f"{path}: models.{name} has unknown keys {sorted(unknown)} (allowed: {sorted(_ALLOWED_KEYS)})"
        )
    params = table.get("params", {})
    if not isinstance(params, Mapping):
        raise ModelConfigError(f"{path}: models.{name}.params must be a table")
    _check_no_secret(path, f"models.{name}.params", params)
    deployments: tuple[Deployment, ...] = ()
    if "deployments" in table:
        raw = table["deployments"]
        if not isinstance(raw, list) or not raw:
            raise ModelConfigError(f"{path}: models.{name}.deployments must be a non-empty list")
        deployments = tuple(_deployment(path, name, d) for d in raw)
        model = table.get("model") or deployments[0].model
        api_base = deployments[0].api_base if len(deployments) == 1 else None
        api_key_env = deployments[0].api_key_env if len(deployments) == 1 else None
    else:
        model = table.get("model")
        if not isinstance(model, str) or not model:
            raise ModelConfigError(f'{path}: models.{name} needs model = "provider/name" or deployments')
        api_base = table.get("api_base")
        api_key_env = table.get("api_key_env")
    if model in EMBEDDED_MODELS:
        raise ModelConfigError(f"{path}: models.{name}: the embedded model needs no config entry")
    logprobs = table.get("supports_logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise ModelConfigError(f"{path}: models.{name}.supports_logprobs must be true or false")
    _check_api_base(api_base, f"{path}: models.{name}.api_base = {api_base!r} is not an http(s) URL")
    settings: dict[str, Any] = {}
    for key in SETTING_KEYS:
        if key in table:
            where = f"{path}: models.{name}."
            try:
                settings[key] = check_setting(key, table[key], where)
            except SelfAlignError as exc:
                text = str(exc)
                raise ModelConfigError(text if text.startswith(where) else f"{where}{key}: {text}") from None
    if logprobs is None:
        logprobs = guess_supports_logprobs(model, api_base)
    return ModelSpec(
        name=name,
        model=model,
        provider=provider_of(model) or "openai",
        api_base=api_base,
        api_key_env=api_key_env,
        supports_logprobs=logprobs,
        source="config",
        deployments=deployments if len(deployments) > 1 else (),
        params=dict(params) | (dict(deployments[0].params) if len(deployments) == 1 else {}),
        description=str(table.get("description", "")),
        settings=settings,
    )


def load_config(path: str | Path | None = None) -> dict[str, ModelSpec]:
    """The aliases defined in the models config file (empty when the default file does not exist).

    Raises :class:`ModelConfigError` for a file that cannot be read or holds a key itself.
    """
    file = config_path(path)
    if not file.exists():
        if path is not None:
            raise ModelConfigError(f"{file}: no such models config file")
        return {}
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{file}: cannot read models config: {exc}") from None
    models = data.get("models", {})
    if not isinstance(models, Mapping):
        raise ModelConfigError(f"{file}: [models] must be a table of model aliases")
    return {name: _spec_from_table(file, name, table) for name, table in models.items()}


def resolve_model(name: str, *, config: str | Path | None = None, api_base: str | None = None) -> ModelSpec:
    """Validate a model string or configured alias and return its :class:`ModelSpec`.

    Accepts the embedded model (``selfalign/gemma-3-270m``), an alias from the config file, or a LiteLLM
    ``provider/model`` string. A bare name that is neither an alias nor a known model raises
    :class:`~selfalign.errors.UnknownChoiceError` listing the valid ones. ``api_base`` overrides the base URL.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownChoiceError("model", str(name), _known_names(config))
    name = name.strip()
    if name in EMBEDDED_MODELS:
        if api_base:
            raise ModelConfigError(f"model {name!r} runs in-process; it takes no api_base")
        return embedded_spec(name)
    aliases = load_config(config)
    if name in aliases:
        spec = aliases[name]
        if api_base:
            spec = _with_api_base(spec, api_base)
        return spec
    provider = provider_of(name)
    if provider == EMBEDDED_PROVIDER:
        raise UnknownChoiceError("model", name, _known_names(config, aliases))
    if not provider and not _litellm_knows(name):
        raise UnknownChoiceError(
            "model", name, _known_names(config, aliases), hint="or give a LiteLLM string such as openai/gpt-4o-mini"
        )
    if provider and not name.split("/", 1)[1].strip():
        hint = "a provider/model string names a model"
        raise UnknownChoiceError("model", name, _known_names(config, aliases), hint=hint)
    if provider and provider not in litellm_providers():
        raise UnknownChoiceError(
            "model",
            name,
            _known_names(config, aliases),
            hint=f"LiteLLM routes no provider {provider!r}; give an alias or a LiteLLM string such as "
            "openai/gpt-4o-mini, hosted_vllm/<model> or ollama/<model>",
        )
    return ModelSpec(
        name=name,
        model=name,
        provider=provider or "openai",
        api_base=api_base,
        supports_logprobs=guess_supports_logprobs(name, api_base),
        source="direct",
    )


def _with_api_base(spec: ModelSpec, api_base: str) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, api_base=api_base, deployments=())


def _known_names(config: str | Path | None, aliases: Mapping[str, ModelSpec] | None = None) -> list[str]:
    if aliases is None:
        try:
            aliases = load_config(config)
        except ModelConfigError:
            aliases = {}
    return [*EMBEDDED_MODELS, *aliases]


_providers: list[frozenset[str]] = []
_PROVIDER_ENUM = re.compile(r"^class LlmProviders\(str, Enum\):\n(.*?)^\S", re.M | re.S)


def litellm_providers() -> frozenset[str]:
    """The provider prefixes LiteLLM routes (``openai``, ``hosted_vllm``, ``ollama``, ...).

    Read from LiteLLM's provider enumeration in its installed sources, which is fast; where that cannot be
    read, LiteLLM itself is imported and asked (seconds).
    """
    if _providers:
        return _providers[0]
    import importlib.util

    names: set[str] = set()
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.origin:
        try:
            source = (Path(spec.origin).parent / "types" / "utils.py").read_text(encoding="utf-8")
        except OSError:
            source = ""
        block = _PROVIDER_ENUM.search(source)
        if block:
            names = set(re.findall(r'^[ \t]+[A-Z0-9_]+ = "([^"]+)"', block.group(1), re.M))
    if len(names) < 20:  # not found (LiteLLM moved it): ask LiteLLM
        from selfalign.models.litellm_env import import_litellm

        names = {str(getattr(p, "value", p)) for p in import_litellm().provider_list}
    _providers.append(frozenset(names | {"openai", "text-completion-openai", "hosted_vllm"}))
    return _providers[0]


def _litellm_knows(name: str) -> bool:
    """Whether LiteLLM can route a bare model name (``gpt-4o-mini``): looked up in the model list LiteLLM
    ships (without importing LiteLLM, which takes seconds), else asked of LiteLLM itself."""
    import importlib.util
    import json

    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.origin:
        table = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
        try:
            return name in json.loads(table.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    from selfalign.models.litellm_env import import_litellm

    litellm = import_litellm()
    try:
        litellm.get_llm_provider(name)
    except Exception:
        return False
    return True


def list_models(config: str | Path | None = None) -> list[ModelInfo]:
    """The embedded default model and every configured alias, with whether each gives log-probabilities."""
    specs = [embedded_spec(), *load_config(config).values()]
    return [
        ModelInfo(
            name=s.name,
            model=s.model,
            provider=s.provider,
            api_base=s.api_base,
            supports_logprobs=s.supports_logprobs,
            source=s.source,
            deployments=max(1, len(s.deployments)),
            is_default=s.name == DEFAULT_MODEL,
            description=s.description,
        )
        for s in specs
    ]
