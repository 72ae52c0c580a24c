"""Model strings, config aliases and capabilities (no network, no LiteLLM import needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfalign import DEFAULT_MODEL
from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.models import list_models, resolve_model
from selfalign.models.config import ModelConfigError, guess_supports_logprobs

CONFIG = """
[models.mini]
model = "openai/gpt-4o-mini"
api_key_env = "OPENAI_API_KEY"

[models.local]
model = "openai/gemma"
api_base = "http://127.0.0.1:8080/v1"
supports_logprobs = true

[models.claude]
model = "anthropic/claude-3-5-haiku-latest"

[models.farm]
supports_logprobs = true
deployments = [
  { model = "hosted_vllm/llama", api_base = "http://10.0.0.1:8000/v1" },
  { model = "hosted_vllm/llama", api_base = "http://10.0.0.2:8000/v1", api_key_env = "FARM_KEY" },
]
"""


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(CONFIG)
    return path


def test_embedded_model_is_the_default_and_gives_logprobs():
    spec = resolve_model(DEFAULT_MODEL)
    assert spec.is_embedded and spec.supports_logprobs and spec.provider == "selfalign"
    rows = list_models()
    assert rows[0].name == DEFAULT_MODEL and rows[0].is_default and rows[0].supports_logprobs


def test_aliases_from_config(config: Path):
    local = resolve_model("local", config=config)
    assert local.model == "openai/gemma" and local.api_base == "http://127.0.0.1:8080/v1"
    farm = resolve_model("farm", config=config)
    assert farm.uses_router and len(farm.deployments) == 2 and farm.deployments[1].api_key_env == "FARM_KEY"
    assert resolve_model("claude", config=config).supports_logprobs is False
    names = [m.name for m in list_models(config)]
    assert names == [DEFAULT_MODEL, "mini", "local", "claude", "farm"]


def test_config_env_var(config: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SELFALIGN_CONFIG", str(config))
    assert resolve_model("mini").api_key_env == "OPENAI_API_KEY"


def test_unknown_alias_lists_valid_ones(config: Path):
    with pytest.raises(UnknownChoiceError) as info:
        resolve_model("locl", config=config)
    assert "local" in str(info.value) and isinstance(info.value, SelfAlignError)
    with pytest.raises(UnknownChoiceError):
        resolve_model("selfalign/gemma-9b", config=config)


def test_direct_model_strings_and_api_base():
    spec = resolve_model("openai/my-model", api_base="http://127.0.0.1:9/v1")
    assert spec.source == "direct" and spec.api_base == "http://127.0.0.1:9/v1" and spec.supports_logprobs
    assert resolve_model("ollama/llama3.1").provider == "ollama"
    with pytest.raises(ModelConfigError):
        resolve_model(DEFAULT_MODEL, api_base="http://127.0.0.1:9/v1")


def test_key_in_config_file_is_refused(tmp_path: Path):
    path = tmp_path / "models.toml"
    path.write_text('[models.bad]\nmodel = "openai/gpt-4o"\napi_key = "sk-test-SECRET123"\n')
    with pytest.raises(ModelConfigError) as info:
        resolve_model("bad", config=path)
    assert "SECRET123" not in str(info.value) and "api_key_env" in str(info.value)


def test_bad_config_names_the_file(tmp_path: Path):
    path = tmp_path / "models.toml"
    path.write_text("[models.x]\nmodell = 'openai/a'\n")
    with pytest.raises(ModelConfigError, match=r"models\.toml"):
        list_models(path)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai/gpt-4o-mini", True),
        ("openai/o3-mini", False),
        ("hosted_vllm/llama", True),
        ("anthropic/claude-3-5-haiku-latest", False),
        ("gemini/gemini-2.0-flash", False),
        ("gpt-4o", True),
    ],
)
def test_logprob_capability_guess(model: str, expected: bool):
    assert guess_supports_logprobs(model) is expected


def test_client_settings_from_an_alias(tmp_path: Path):
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.base]\nmodel = "hosted_vllm/gemma"\napi_base = "http://127.0.0.1:8000/v1"\nmethod = "completion"\n'
        'timeout_s = 30\nmax_retries = 0\nbatch_size = 16\ncompletion_logprobs = "prompt_logprobs"\n'
        "max_concurrency = 4\n"
    )
    spec = resolve_model("base", config=path)
    assert spec.settings == {
        "method": "completion",
        "timeout_s": 30.0,
        "max_retries": 0,
        "batch_size": 16,
        "completion_logprobs": "prompt_logprobs",
        "max_concurrency": 4,
    }


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("timeout_s = 0", "timeout_s = 0"),
        ("timeout_s = -5", "timeout_s = -5"),
        ('timeout_s = "60"', "timeout_s = '60'"),
        ("max_retries = -1", "max_retries = -1"),
        ("max_retries = 1.5", "max_retries = 1.5"),
        ("batch_size = 0", "batch_size = 0"),
        ("max_concurrency = 0", "max_concurrency = 0"),
        ("max_retries = true", "max_retries = True"),
        ('method = "psychic"', "psychic"),
        ('completion_logprobs = "telepathy"', "telepathy"),
        ('api_base = "127.0.0.1:8000"', "api_base = '127.0.0.1:8000'"),
    ],
)
def test_bad_alias_settings_are_one_line_naming_file_key_and_value(tmp_path: Path, line: str, shown: str):
    path = tmp_path / "models.toml"
    path.write_text(f'[models.bad]\nmodel = "openai/x"\n{line}\n')
    with pytest.raises(ModelConfigError) as info:
        resolve_model("bad", config=path)
    message = str(info.value)
    assert "models.toml" in message and "models.bad" in message and shown in message and "\n" not in message


def test_unknown_provider_is_refused_before_any_call(config: Path):
    with pytest.raises(UnknownChoiceError) as info:
        resolve_model("nosuchprovider/xyz", config=config)
    message = str(info.value)
    assert "nosuchprovider" in message and "mini" in message and "\n" not in message  # the aliases are listed
    with pytest.raises(UnknownChoiceError):
        resolve_model("openai/", config=config)
    for fine in ("hosted_vllm/llama", "ollama/llama3.1", "text-completion-openai/gpt-3.5-turbo-instruct"):
        assert resolve_model(fine, config=config).model == fine
