"""A plain (non-editable) install, run from another folder, finds the bundled survey and named programs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling")
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(wheels.glob("selfalign-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "selfalign/_bundled/surveys/wvs7/answers.csv" in names
    assert "selfalign/_bundled/programs/self-align-chrf.toml" in names
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-m", "selfalign", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_wheel_finds_bundled_data_from_another_folder(installed, tmp_path):
    shown = _run(installed, tmp_path, "surveys", "show", "wvs7", "--country", "DEU", "--question", "Q57")
    assert shown.returncode == 0, shown.stderr
    assert "46.0%" in shown.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import selfalign, sys; print(selfalign.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip().startswith(str(installed)), probe.stdout  # the installed copy, not the checkout
    listed = _run(installed, tmp_path, "programs")
    assert listed.returncode == 0, listed.stderr
    assert "self-align-chrf" in listed.stdout and "zero-shot" in listed.stdout
