"""Helpers and fixtures for the model-layer tests (imported by tests/test_models_*.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from selfalign.models.cache import ResultCache, open_cache
from selfalign.models.loopback import LoopbackServer
from selfalign.models.types import LETTERS, RenderedPrompt

RELIGION_OPTIONS = ("Very important", "Rather important", "Not very important", "Not at all important")


def make_prompt(
    question: str, options: Sequence[str] = RELIGION_OPTIONS, demos: Sequence[tuple[str, str]] = ()
) -> RenderedPrompt:
    """A probe in a small test format of our own (the real format is made by the programs module).

    ``text`` is a "Question / Answer:" transcript for the base model, with demonstrations (question, answer)
    first, the options only as scored continuations; ``messages`` the chat rendering: lettered options, the
    demonstrations as earlier user/assistant turns.
    """
    blocks = [f"Question: {q}\nAnswer: {a}\n\n" for q, a in demos]
    text = "".join(blocks) + f"Question: {question}\nAnswer:"
    labels = tuple(LETTERS[: len(options)])
    lettered = "\n".join(f"{label}. {option}" for label, option in zip(labels, options, strict=True))

    def ask(q: str) -> str:
        return f"{q}\n{lettered}\nReply with the letter only."

    messages: list[dict[str, str]] = []
    for q, a in demos:  # demonstrations as earlier turns, answered with the letter where the option is listed
        messages.append({"role": "user", "content": ask(q) if a in options else q})
        messages.append({"role": "assistant", "content": labels[options.index(a)] if a in options else a})
    messages.append({"role": "user", "content": ask(question)})
    return RenderedPrompt(
        text=text,
        continuations=tuple(" " + o for o in options),
        messages=tuple(messages),
        labels=labels,
        options=tuple(options),
    )


@pytest.fixture()
def loopback() -> Iterator[Callable[..., LoopbackServer]]:
    """Start loopback OpenAI-compatible servers: ``loopback(**LoopbackServer fields)``; all stop afterwards."""
    servers: list[LoopbackServer] = []

    def start(**kwargs: object) -> LoopbackServer:
        server = LoopbackServer(**kwargs).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture()
def result_cache(tmp_path: Path) -> ResultCache:
    """An empty result cache of this test's own."""
    return open_cache(tmp_path / "cache")


def files_bytes(folder: Path) -> bytes:
    """Every byte of every file under ``folder`` (to look for leaked secrets)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())
