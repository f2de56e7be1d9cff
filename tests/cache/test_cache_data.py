"""The verifier's training set is rebuilt by code from the seeds and the hand-written pairs."""

from __future__ import annotations

import collections

import pytest

from gateway.offline.cache_data import augment, generate
from gateway.offline.cache_eval import Pair, read_pairs
from gateway.offline.verifier_training import HANDWRITTEN


@pytest.fixture(scope="module")
def generated() -> list[Pair]:
    return generate()


@pytest.fixture(scope="module")
def handwritten() -> list[Pair]:
    return read_pairs(HANDWRITTEN)


def test_the_same_seeds_make_the_same_pairs(generated: list[Pair], handwritten: list[Pair]) -> None:
    assert generate() == generated
    assert augment(handwritten[:200]) == augment(handwritten[:200])


def test_the_set_is_large_and_has_every_kind_in_five_languages(generated: list[Pair], handwritten: list[Pair]) -> None:
    pairs = generated + augment(handwritten)
    assert len(pairs) >= 20_000
    negatives = collections.Counter(p.kind for p in pairs if not p.same)
    for kind in ("direction", "scope", "entity", "number", "unit", "constraint", "format", "audience", "negation", "time"):
        assert negatives[kind] >= 40, kind
    duplicates = collections.Counter(p.kind for p in pairs if p.same)
    for kind in ("typo", "paraphrase", "reorder", "wordier", "terse", "context"):
        assert duplicates[kind] >= 40, kind
    assert {p.lang or "en" for p in pairs} >= {"en", "de", "fr", "es", "zh", "ja"}


def test_every_language_has_negated_and_swapped_questions(generated: list[Pair], handwritten: list[Pair]) -> None:
    """The hard negatives that the cache most often let through outside English (a "nicht", two ends swapped)
    are generated in every language, not in English only."""
    pairs = generated + augment(handwritten)
    negatives = collections.Counter((p.lang or "en", p.kind) for p in pairs if not p.same)
    for lang in ("en", "de", "fr", "es", "zh", "ja"):
        assert negatives[(lang, "negation")] >= 30, lang
        assert negatives[(lang, "direction")] >= 100, lang


def test_no_question_is_in_both_training_and_calibration(generated: list[Pair], handwritten: list[Pair]) -> None:
    """Thresholds are fitted on pairs the weights never saw: a text in a calibration pair is in no training pair."""
    seen: dict[str, set[str]] = {"train": set(), "calibration": set()}
    for p in generated:
        seen[p.split] |= {p.a, p.b}
    assert not seen["train"] & seen["calibration"]
    by_origin = {(p.source, p.split) for p in handwritten}
    for p in augment(handwritten):
        assert (p.source, p.split) in by_origin  # an augmented pair keeps the source and split of its origin
