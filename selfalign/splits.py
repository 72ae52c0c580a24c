"""Seeded, topic-stratified dev/test splits of a survey's questions.

Programs that learn from survey answers (demonstration selection, optimisers) may only look at the dev
questions; results are reported on the test questions. A split is a pure function of the survey's
eligible questions, the seed and the test fraction: the shuffle of each topic is seeded from
``(seed, topic)`` through SHA-256, so the same arguments give the same split in every process, on every
platform and regardless of the order other topics are listed in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.survey import Protocol, Question, Survey

SplitName = Literal["dev", "test", "all"]
SPLIT_NAMES: tuple[str, ...] = ("dev", "test", "all")


@dataclass(frozen=True)
class QuestionSplit:
    """A dev/test partition of question ids (each side in survey order).

    ``questions`` lists every question of the split in survey order (``dev`` + ``test`` when not given).
    """

    seed: int
    test_fraction: float
    dev: tuple[str, ...]
    test: tuple[str, ...]
    protocol: str = Protocol.BINARY.value
    keep_batteries_together: bool = False
    questions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        overlap = set(self.dev) & set(self.test)
        if overlap:
            raise SelfAlignError(f"question split: {sorted(overlap)} are in both dev and test")
        if not self.questions:
            object.__setattr__(self, "questions", (*self.dev, *self.test))
        elif set(self.questions) != set(self.dev) | set(self.test) or len(self.questions) != len(set(self.questions)):
            raise SelfAlignError("question split: questions must list exactly the dev and test ids")

    def of(self, question_id: str) -> Literal["dev", "test"]:
        """``"dev"`` or ``"test"``: the side ``question_id`` is on."""
        if question_id in self.test:
            return "test"
        if question_id in self.dev:
            return "dev"
        raise UnknownChoiceError("question", question_id, self.questions, hint="not in this split")

    def ids(self, name: str) -> tuple[str, ...]:
        """Question ids of ``"dev"``, ``"test"`` or ``"all"`` (survey order)."""
        if name == "dev":
            return self.dev
        if name == "test":
            return self.test
        if name == "all":
            return self.questions
        raise UnknownChoiceError("split", name, SPLIT_NAMES)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description (for run metadata)."""
        return {
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "protocol": self.protocol,
            "keep_batteries_together": self.keep_batteries_together,
            "dev": list(self.dev),
            "test": list(self.test),
        }


def _topic_rng(seed: int, topic: str) -> np.random.Generator:
    """A generator seeded from (seed, topic) through SHA-256 (stable across processes, unlike hash())."""
    digest = hashlib.sha256(f"selfalign-split\x00{seed}\x00{topic}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)


def _units(questions: Sequence[Question], keep_batteries_together: bool) -> dict[str, list[list[str]]]:
    """Per topic (in order of first appearance), the units that go to one side together.

    A unit is a single question, or with ``keep_batteries_together`` all items of one battery; a battery
    whose items span topics is placed in the topic of its first item.
    """
    topics: dict[str, list[list[str]]] = {}
    battery_unit: dict[str, list[str]] = {}
    for q in questions:
        if keep_batteries_together and q.battery:
            unit = battery_unit.get(q.battery)
            if unit is not None:
                unit.append(q.id)
                continue
            unit = battery_unit[q.battery] = [q.id]
        else:
            unit = [q.id]
        topics.setdefault(q.topic, []).append(unit)
    return topics


def _pick_test(units: list[list[str]], target: int) -> set[int]:
    """Indices (into ``units``, already shuffled) for the test side: take units in order while that
    brings the number of test questions closer to ``target``; with two or more units, at least one unit
    goes to each side (when ``target`` > 0)."""
    chosen: set[int] = set()
    count = 0
    for i, unit in enumerate(units):
        if len(units) >= 2 and len(chosen) == len(units) - 1:
            break
        if abs(count + len(unit) - target) < abs(count - target):
            chosen.add(i)
            count += len(unit)
    if not chosen and len(units) >= 2 and target > 0:
        chosen.add(0)
    return chosen


def split_questions(
    survey: Survey,
    *,
    protocol: Protocol | str = Protocol.BINARY,
    seed: int = 0,
    test_fraction: float = 0.3,
    keep_batteries_together: bool = False,
) -> QuestionSplit:
    """Split the questions ``survey`` can pose under ``protocol`` into dev and test, stratified by topic.

    For each topic, its eligible questions are shuffled with a generator seeded from ``(seed, topic)``
    and the first ``round(test_fraction * n_topic)`` (rounded half up) go to test, the rest to dev; a topic
    with two or more questions always has at least one on each side, a topic with one question goes where
    the rounding puts it. With ``keep_batteries_together`` the items of one battery (``Question.battery``)
    are shuffled and assigned as one unit, taken while that brings the topic's test count closer to its
    target, so the per-topic fractions are approximate (a topic that is a single battery goes wholly to
    one side).
    """
    try:
        proto = Protocol(protocol)
    except ValueError:
        raise UnknownChoiceError("protocol", str(protocol), [p.value for p in Protocol]) from None
    if not 0.0 < test_fraction < 1.0:
        raise SelfAlignError(f"test fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    eligible = survey.questions_for(proto)
    if not eligible:
        raise SelfAlignError(f"survey {survey.name} has no questions that can be posed as {proto.value}")
    test_ids: set[str] = set()
    for topic, units in _units(eligible, keep_batteries_together).items():
        order = _topic_rng(seed, topic).permutation(len(units))
        shuffled = [units[i] for i in order]
        n_topic = sum(len(u) for u in units)
        target = _round_half_up(test_fraction * n_topic)
        if n_topic >= 2:
            target = min(max(target, 1), n_topic - 1)
        for i in _pick_test(shuffled, target):
            test_ids.update(shuffled[i])
    ordered = tuple(q.id for q in eligible)
    return QuestionSplit(
        seed=seed,
        test_fraction=test_fraction,
        dev=tuple(i for i in ordered if i not in test_ids),
        test=tuple(i for i in ordered if i in test_ids),
        protocol=proto.value,
        keep_batteries_together=keep_batteries_together,
        questions=ordered,
    )
