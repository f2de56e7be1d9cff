"""A floor under the shipped verifier's quality: its figures on the frozen test split.

The frozen split (evals/cache-frozen7.jsonl) was written and committed before the shipped verifier
was trained, and no weight, threshold or rule was fitted on it; loadtest/RESULTS.md reports its
first look, and the floor here is that first look. A change (new weights, a new rule, a looser
floor or target) that makes the cache hit a hard negative it did not hit, or lose duplicates past
the margin, fails here.
"""

from __future__ import annotations

import pytest

from gateway.cache.verifier import Calibration, threshold_for
from gateway.offline.cache_eval import Judged, Pair, figures, judge, predicted, read_pairs
from gateway.settings import CacheSettings
from tests.helpers.gateway import ROOT

SPLITS = {
    "cache-frozen7.jsonl": {"precision": 0.938, "recall": 0.570, "false_hit_rate": 0.045, "false_hits": 4},
}
"""What ships, at the default settings, on each frozen split: its first look (loadtest/RESULTS.md,
"Semantic cache precision")."""
MARGIN = 0.03
"""How far precision and recall may fall (a retrain moves a few pairs either way); false hits may not grow."""


@pytest.fixture(scope="module", params=sorted(SPLITS))
def frozen(request: pytest.FixtureRequest) -> tuple[list[Pair], Judged, dict[str, float]]:
    pairs = read_pairs(ROOT / "evals" / request.param)
    return pairs, judge(pairs), SPLITS[request.param]


def test_the_shipped_verifier_holds_its_frozen_split_figures(frozen: tuple[list[Pair], Judged, dict[str, float]]) -> None:
    pairs, judged, reported = frozen
    settings = CacheSettings()
    point = threshold_for(Calibration.load(), settings.target_false_hit_rate, settings.threshold)
    hits = predicted(judged, settings.threshold, point.threshold)
    found = figures(pairs, judged, settings.threshold, point.threshold)
    false = [(p.kind, p.a, p.b) for p, h in zip(pairs, hits, strict=True) if h and not p.same]
    assert len(false) <= reported["false_hits"], f"false hits on the frozen split: {false}"
    assert found["false_hit_rate"] <= reported["false_hit_rate"] + 0.001
    assert found["precision"] >= reported["precision"] - MARGIN
    assert found["recall"] >= reported["recall"] - MARGIN


def test_without_the_verifier_the_same_split_gets_false_hits(frozen: tuple[list[Pair], Judged, dict[str, float]]) -> None:
    """The floor above can fail: cosine and rules alone, at the same floor, hit hard negatives."""
    pairs, judged, reported = frozen
    hits = predicted(judged, CacheSettings().threshold, None)
    assert sum(h and not p.same for p, h in zip(pairs, hits, strict=True)) > reported["false_hits"] + 5
