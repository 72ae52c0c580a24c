"""The one disk cache: keys, JSON values, last-run figures, and the `selfalign cache` / `models` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfalign.models import AnswerDistribution, ScoringMethod, open_cache
from selfalign.models.cache import cache_key, default_cache_dir
from selfalign.models.types import dist_from_json, dist_to_json


def test_key_is_canonical_and_sensitive():
    a = cache_key({"model": "m", "prompt": {"text": "x", "options": ["a", "b"]}, "params": {"t": 0}})
    b = cache_key({"params": {"t": 0}, "prompt": {"options": ["a", "b"], "text": "x"}, "model": "m"})
    assert a == b and len(a) == 64
    assert a != cache_key({"model": "m", "prompt": {"text": "x", "options": ["b", "a"]}, "params": {"t": 0}})


def test_distribution_round_trip_as_json():
    dist = AnswerDistribution(
        options=("a", "b"),
        probs=(0.25, 0.75),
        method=ScoringMethod.SAMPLE,
        off_option_mass=0.1,
        raw_answer="b",
        extra={"counts": [1, 3]},
    )
    data = dist_to_json(dist)
    json.dumps(data)  # plain JSON
    back = dist_from_json(json.loads(json.dumps(data)))
    assert back.cached and back.probs == dist.probs and back.method is ScoringMethod.SAMPLE
    assert back.extra == {"counts": [1, 3]} and back.raw_answer == "b"


def test_values_are_stored_as_readable_json(tmp_path: Path):
    cache = open_cache(tmp_path / "c")
    cache.set(cache_key({"k": 1}), {"text": "distinctive-value-42"})
    raw = b"".join(p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert b"distinctive-value-42" in raw  # not pickled nor compressed: a leaked secret would show


def test_info_clear_and_last_run(tmp_path: Path):
    cache = open_cache(tmp_path / "c")
    assert open_cache(tmp_path / "c") is cache  # one per directory per process
    key = cache_key({"k": 1})
    assert cache.get(key) is None
    cache.set(key, {"v": 1})
    assert cache.get(key) == {"v": 1} and cache.get(key) == {"v": 1}
    cache.save_run_stats()
    info = cache.info()
    assert info.entries == 1 and info.size_bytes > 0 and info.hit_rate == pytest.approx(2 / 3)
    assert cache.clear() == 1 and cache.info().entries == 0 and cache.info().hit_rate is None


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SELFALIGN_CACHE_DIR", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    assert open_cache().path == (tmp_path / "env-cache").resolve()


def test_cache_commands(cli, tmp_path: Path):
    folder = tmp_path / "cli-cache"
    cache = open_cache(folder)
    cache.set(cache_key({"k": 1}), {"v": 1})
    cache.get(cache_key({"k": 1}))
    cache.get(cache_key({"k": 2}))
    cache.save_run_stats()
    result = cli("cache", "info", "--cache-dir", str(folder))
    assert result.exit_code == 0
    assert str(folder) in result.output and "entries:   1" in result.output and "50.0%" in result.output
    result = cli("cache", "clear", "--cache-dir", str(folder))
    assert result.exit_code == 0 and "removed 1" in result.output
    assert "entries:   0" in cli("cache", "info", "--cache-dir", str(folder)).output


def test_models_command_lists_embedded_and_configured(cli, tmp_path: Path):
    config = tmp_path / "models.toml"
    config.write_text(
        '[models.local]\nmodel = "openai/gemma"\napi_base = "http://127.0.0.1:8080/v1"\n'
        'api_key_env = "LOCAL_KEY"\n[models.claude]\nmodel = "anthropic/claude-3-5-haiku-latest"\n'
    )
    result = cli("models", "--config", str(config))
    assert result.exit_code == 0
    out = result.output
    assert "selfalign/gemma-3-270m" in out and "(default)" in out and "in-process" in out
    assert "http://127.0.0.1:8080/v1" in out and "local" in out and "no (sampled)" in out
    assert "LOCAL_KEY" not in out  # nothing about keys


def test_models_command_bad_config_is_one_line_error(tmp_path: Path):
    from click.testing import CliRunner

    from selfalign.cli import cli as group

    config = tmp_path / "models.toml"
    config.write_text('[models.bad]\nmodel = "openai/x"\napi_key = "sk-test-SECRET123"\n')
    result = CliRunner().invoke(group, ["models", "--config", str(config)])
    assert result.exit_code == 2 and "api_key_env" in result.output and "SECRET123" not in result.output
