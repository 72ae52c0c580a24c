"""What each probe of a run was shown, stored in the run folder as ``prompts.jsonl.gz``.

One JSON object per distinct prompt, keyed by the rows' ``prompt_sha256`` (the hash of everything the model
sees, :func:`selfalign.runner.prompt_sha256`): the base-model transcript and its continuations, the chat
messages, labels and options, exactly as sent, and the demonstrations shown (question id, text shown, answer
shown, in prompt order). A row finds its prompt and demonstrations through its ``prompt_sha256``: the
demonstrations are part of the prompt, so rows that share a prompt share them (e.g. a zero-shot probe listed
under several k).

The file is a sequence of complete gzip members (a valid multi-member gzip file: ``zcat prompts.jsonl.gz``
prints one line per prompt), each holding up to :data:`BATCH` whole lines and written with one write, a flush
and an fsync. The runner stores a run's prompts before it makes any model call for them, so every row in
``runs.jsonl`` has its prompt on disk. A kill can tear only the last member: :func:`read_prompts` stops before
it, and the next :class:`PromptStore` opened on the folder cuts that torn tail off before appending (it holds
only prompts whose rows were not yet run, which a resumed run renders and stores again). A prompt already in
the file is never written twice, so resuming neither duplicates nor loses prompts. For the paper's run
(23,560 rows, 7,852 distinct prompts) the file is about 1 MB (13.6 MB of JSON uncompressed).

Run folders written before this module existed have no such file: :func:`read_prompts` returns nothing and
the report says "prompt not stored for this run".
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Any

from selfalign.models.types import RenderedPrompt

PROMPTS_FILE = "prompts.jsonl.gz"
BATCH = 200
"""Prompts per gzip member: large enough to compress well (about 13:1 on real prompts), small enough that a
torn member loses little."""
_GZIP_WBITS = 31  # zlib: gzip header and trailer


@dataclass(frozen=True)
class ShownDemo:
    """One demonstration as shown in a prompt: its question, the text shown and the answer shown."""

    question_id: str
    text: str
    answer: str


@dataclass(frozen=True)
class StoredPrompt:
    """A prompt as sent and the demonstrations it shows."""

    sha256: str
    prompt: RenderedPrompt
    demonstrations: tuple[ShownDemo, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one line of the file."""
        p = self.prompt
        return {
            "sha256": self.sha256,
            "text": p.text,
            "continuations": list(p.continuations),
            "messages": [dict(m) for m in p.messages],
            "labels": list(p.labels),
            "options": list(p.options),
            "demonstrations": [[d.question_id, d.text, d.answer] for d in self.demonstrations],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StoredPrompt:
        """The inverse of :meth:`to_json`."""
        prompt = RenderedPrompt(
            text=obj["text"],
            continuations=tuple(obj["continuations"]),
            messages=tuple(dict(m) for m in obj["messages"]),
            labels=tuple(obj["labels"]),
            options=tuple(obj["options"]),
        )
        demos = tuple(ShownDemo(str(q), str(t), str(a)) for q, t, a in obj.get("demonstrations") or ())
        return cls(str(obj["sha256"]), prompt, demos)


def shown_demonstrations(prepared: Any) -> tuple[ShownDemo, ...]:
    """The demonstrations a prepared probe shows, in prompt order (a program's fixed ones first, then the
    retrieved ones; see :attr:`selfalign.programs.PreparedProbe.demos`)."""
    return tuple(
        ShownDemo(str(d.get("question_id") or ""), str(d["question"]), str(d["answer"])) for d in prepared.demos
    )


# --- reading --------------------------------------------------------------------------------------------------


def _complete_members(data: bytes) -> tuple[list[bytes], int]:
    """The decompressed complete gzip members of ``data`` and the offset where the last of them ends."""
    view = memoryview(data)
    members: list[bytes] = []
    pos = 0
    while pos < len(data):
        inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
        try:
            chunk = inflater.decompress(view[pos:])
        except zlib.error:
            break
        if not inflater.eof:
            break
        members.append(chunk)
        pos = len(data) - len(inflater.unused_data)
    return members, pos


def _lines(members: Iterable[bytes]) -> Iterable[dict[str, Any]]:
    for member in members:
        for line in member.decode("utf-8").split("\n"):  # not splitlines(): prompts may hold U+2028 and kin
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("sha256"), str):
                yield obj


def prompts_path(run_dir: str | Path) -> Path:
    """The prompt file of a run folder (or of the folder holding a run table file)."""
    folder = Path(run_dir)
    if folder.suffix in (".parquet", ".csv") and not folder.is_dir():
        folder = folder.parent
    return folder / PROMPTS_FILE


def read_prompts(run_dir: str | Path) -> dict[str, StoredPrompt]:
    """The stored prompts of a run folder by ``prompt_sha256``; empty for a run that stored none (older runs).

    A torn last member (a kill during a write) is skipped."""
    path = prompts_path(run_dir)
    if not path.is_file():
        return {}
    members, _ = _complete_members(path.read_bytes())
    out: dict[str, StoredPrompt] = {}
    for obj in _lines(members):
        out.setdefault(obj["sha256"], StoredPrompt.from_json(obj))
    return out


# --- writing --------------------------------------------------------------------------------------------------


class PromptStore:
    """Appends prompts to a run folder's ``prompts.jsonl.gz``, each distinct ``prompt_sha256`` once.

    Opening cuts off a torn last member left by a kill. :meth:`add` buffers; every :data:`BATCH` new prompts,
    and on :meth:`flush` / :meth:`close`, the buffer is written as one gzip member and fsynced. Thread-safe.
    """

    def __init__(self, run_dir: str | Path, batch: int = BATCH) -> None:
        self.path = prompts_path(run_dir)
        self.batch = batch
        self._lock = Lock()
        self._pending: list[str] = []
        self.written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._known: set[str] = set()
        if self.path.exists():
            data = self.path.read_bytes()
            members, good_end = _complete_members(data)
            self._known = {obj["sha256"] for obj in _lines(members)}
            if good_end < len(data):  # a member torn by a kill: its prompts are written again when re-added
                os.truncate(self.path, good_end)
        self._file: Any = None  # opened at the first write: storing nothing creates no file

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._known

    def __len__(self) -> int:
        return len(self._known)

    def add(self, sha256: str, prompt: RenderedPrompt, demonstrations: Sequence[ShownDemo] = ()) -> bool:
        """Queue a prompt unless its hash is already stored; True when it was new."""
        with self._lock:
            if sha256 in self._known:
                return False
            line = json.dumps(
                StoredPrompt(sha256, prompt, tuple(demonstrations)).to_json(),
                ensure_ascii=False,
                separators=(",", ":"),
            )
            self._known.add(sha256)
            self._pending.append(line)
            if len(self._pending) >= self.batch:
                self._write()
            return True

    def _write(self) -> None:
        if not self._pending:
            return
        compressor = zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS)
        payload = "".join(line + "\n" for line in self._pending).encode("utf-8")
        member = compressor.compress(payload) + compressor.flush()
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(member)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.written += len(self._pending)
        self._pending = []

    def flush(self) -> None:
        """Write the queued prompts as one gzip member and fsync."""
        with self._lock:
            self._write()

    def close(self) -> None:
        """Flush and close."""
        with self._lock:
            self._write()
            if self._file is not None and not self._file.closed:
                self._file.close()

    def __enter__(self) -> PromptStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def store_prompts(run_dir: str | Path, entries: Iterable[tuple[str, RenderedPrompt, Sequence[ShownDemo]]]) -> int:
    """Store ``(prompt_sha256, prompt, demonstrations)`` entries not yet in the run folder; the number written."""
    with PromptStore(run_dir) as store:
        for sha, prompt, demos in entries:
            store.add(sha, prompt, demos)
    return store.written
