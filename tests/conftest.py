"""Shared test fixtures: isolated user folders and caches, the bundled survey, the CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_WVS7 = REPO.parent / "shared" / "data" / "wvs7"


def pytest_configure(config: pytest.Config) -> None:
    """Keep tests away from the user's own data and cache folders."""
    base = Path(os.environ.get("SELFALIGN_TEST_TMP", "/tmp")) / f"selfalign-tests-{os.getpid()}"
    os.environ.setdefault("SELFALIGN_HOME", str(base / "home"))
    os.environ.setdefault("SELFALIGN_CACHE_DIR", str(base / "cache"))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def wvs7():
    """The bundled WVS-7 survey."""
    from selfalign.loaders import load_survey

    return load_survey("wvs7")


@pytest.fixture(scope="session")
def shared_wvs7() -> Path:
    """The reference data folder beside the checkout; tests using it skip where it is absent."""
    if not (SHARED_WVS7 / "questions.csv").exists():
        pytest.skip("../shared/data/wvs7 is not present (only in the development checkout)")
    return SHARED_WVS7


@pytest.fixture()
def cli():
    """Invoke the selfalign CLI in-process: cli(*args) -> click Result."""
    from click.testing import CliRunner

    from selfalign.cli import cli as group

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(group, list(args), catch_exceptions=False)

    return invoke
