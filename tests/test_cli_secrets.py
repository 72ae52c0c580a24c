"""No secret in anything a run writes: a key planted in the environment, echoed back by a careless server in its
normal replies and in its error bodies, is found nowhere, whole or in any 8 characters of it.

The run goes through the command line as a user's would (``selfalign compare`` against a loopback server with
``--api-base``, then ``selfalign report``), in a process of its own whose stdout and stderr are kept. Every file
under the test's folder (the run folder, the cache folder, the home folder, the working folder) is read as
stored and, where it holds more than its bytes show, decoded: gzip files, Parquet tables (every cell), SQLite
databases (every row), and the report's embedded base64 and gzip payload.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import os
import re
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from models_fixtures import loopback  # noqa: F401  (fixture)

from selfalign.models.loopback import Reply, default_policy

REPO = Path(__file__).resolve().parent.parent
PIECE = 8
_BASE64 = re.compile(rb"[A-Za-z0-9+/]{40,}={0,2}")


def _decoded(path: Path) -> list[bytes]:
    """The file's bytes and everything they hold in another form (gzip, Parquet cells, SQLite rows, base64)."""
    data = path.read_bytes()
    out = [data]
    if data[:2] == b"\x1f\x8b":
        out.append(gzip.decompress(data))
    if data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        out.append(repr(pq.read_table(path).to_pylist()).encode())
    if data[:16] == b"SQLite format 3\x00":
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            out.append("\n".join(db.iterdump()).encode())
    for blob in _BASE64.findall(data):
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            continue
        out.append(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    return out


def _pieces(key: str) -> list[bytes]:
    return [key[i : i + PIECE].encode() for i in range(len(key) - PIECE + 1)]


def _leaks(texts: dict[str, list[bytes]], key: str) -> list[str]:
    """Where the key, or any 8 characters of it, is found."""
    found = []
    for name, blobs in texts.items():
        for blob in blobs:
            hits = sorted({p.decode() for p in _pieces(key) if p in blob})
            if hits:
                found.append(f"{name}: {hits[:3]}")
                break
    return found


def _selfalign(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selfalign", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_a_planted_key_echoed_by_the_server_is_in_no_file_a_run_writes(loopback, tmp_path: Path) -> None:  # noqa: F811
    key = f"sk-planted-{secrets.token_hex(16)}"

    # the first wave of 8 requests fails: a 401 that echoes the key in its error body and 500s whose bodies echo the
    # header (retried once; three retries fail again); every normal reply ends with "(Bearer <key>)", and every
    # third one is off-format, so that its raw answer is kept in the run table
    def policy(body: dict, i: int) -> Reply:
        return Reply("Hmm", (("Hmm", -0.01),)) if i % 3 == 0 else default_policy(body, i)

    server = loopback(echo_auth=True, faults=[401] + [500] * 10, policy=policy)
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SELFALIGN_")},
        "PYTHONPATH": str(REPO),
        "HOME": str(home),
        "SELFALIGN_HOME": str(home / "selfalign"),
        "OPENAI_API_KEY": key,
    }
    run = ["--model", "openai/loopback", "--api-base", server.api_base, "--countries", "NGA", "--limit", "4"]
    run += ["--programs", "zero-shot,self-align-chrf", "--retries", "1", "--out", "run", "--cache-dir", "cache"]
    compare = _selfalign(["compare", *run], work, env)
    assert compare.returncode == 0, compare.stderr
    report = _selfalign(["report", "run"], work, env)
    assert report.returncode == 0, report.stderr

    # the key was sent, and the server did put it into its replies and error bodies
    assert server.headers_seen and all(h.get("authorization") == f"Bearer {key}" for h in server.headers_seen)
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    for expected in ("runs.jsonl", "runs.csv", "runs.parquet", "prompts.jsonl.gz", "report.md", "report.html"):
        assert f"work/run/{expected}" in names, sorted(names)
    assert any(n.startswith("work/cache/") for n in names)
    log = (work / "run" / "runs.jsonl").read_text(encoding="utf-8")
    assert "Incorrect API key provided" in log and "injected fault 500" in log  # the error bodies, masked
    assert "invalid answer: 'Hmm (Bearer ***)'" in log  # a normal reply, masked

    texts = {p.relative_to(tmp_path).as_posix(): _decoded(p) for p in written}
    for name, process in (("compare", compare), ("report", report)):
        texts[f"{name} stdout"] = [process.stdout.encode()]
        texts[f"{name} stderr"] = [process.stderr.encode()]
    assert _leaks(texts, key) == []
    assert _leaks({"control": [f"a reply ({key[5:21]})".encode()]}, key)  # the search does find a piece
