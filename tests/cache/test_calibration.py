"""The verifier's threshold is picked for a target false-hit rate, and meets it on pairs it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.cache.verifier import Calibration, threshold_for, wilson


def synthetic(rng: np.random.Generator, negatives: int, positives: int) -> Calibration:
    """Scores like a verifier's: negatives mostly low with a tail, positives mostly high."""
    same = np.r_[np.zeros(negatives, bool), np.ones(positives, bool)]
    score = np.r_[rng.beta(1.2, 6.0, negatives), rng.beta(6.0, 1.2, positives)].astype(np.float32)
    cosine = np.r_[rng.uniform(0.3, 1.0, negatives), rng.uniform(0.5, 1.0, positives)].astype(np.float32)
    return Calibration(same, cosine, np.zeros(len(same), bool), score, [""] * len(same))


@pytest.mark.parametrize("target", [0.01, 0.02, 0.05])
def test_the_threshold_meets_its_target_on_a_fresh_split(target: float) -> None:
    rng = np.random.default_rng(7)
    point = threshold_for(synthetic(rng, 4000, 4000), target, floor=0.5)
    assert point.upper <= target  # chosen so that the 95% upper bound is within the target
    fresh = synthetic(rng, 20000, 20000)
    eligible = fresh.cosine >= 0.5
    false_hits = (eligible & (fresh.score >= point.threshold) & ~fresh.same).sum() / (~fresh.same).sum()
    assert false_hits <= target
    assert point.recall > 0.5  # and it is not met by refusing everything


def test_it_is_the_lowest_such_threshold() -> None:
    rng = np.random.default_rng(3)
    calibration = synthetic(rng, 2000, 2000)
    point = threshold_for(calibration, 0.02, floor=0.0)
    negatives = np.sort(calibration.score[~calibration.same])
    below = negatives[negatives < point.threshold].max()  # the next negative it would let through
    assert wilson(int((negatives >= below).sum()), len(negatives))[1] > 0.02


def test_the_floor_and_the_rules_count_as_at_run_time() -> None:
    rng = np.random.default_rng(5)
    c = synthetic(rng, 3000, 3000)
    ruled = Calibration(c.same, c.cosine, np.ones(len(c.same), bool), c.score, c.kind)
    assert threshold_for(ruled, 0.01, floor=0.5).false_hit_rate == 0.0  # every pair refused: nothing gets through
    assert threshold_for(ruled, 0.01, floor=0.5).recall == 0.0
    assert threshold_for(c, 0.01, floor=0.99).threshold < threshold_for(c, 0.01, floor=0.0).threshold


def test_the_shipped_calibration_scores_are_the_running_verifiers() -> None:
    """The threshold is picked from scores the gateway's own verifier file gives (the int8 export,
    on the CPU): re-exported or re-quantized differently without recalibrating, this fails."""
    from gateway.cache.verifier import CrossEncoder
    from gateway.offline.verifier_training import readable_with_bundled_tokenizer, training_pairs

    _, calibration = training_pairs(readable_with_bundled_tokenizer())
    shipped = Calibration.load()
    assert len(calibration) == len(shipped.score)  # the calibration split is the one the scores are for
    picked = list(range(0, len(calibration), len(calibration) // 60))
    verifier = CrossEncoder()
    try:
        scores = verifier.score_pairs([(calibration[i].b, calibration[i].a) for i in picked])
    finally:
        verifier.close()
    assert [calibration[i].same for i in picked] == [bool(shipped.same[i]) for i in picked]
    # The int8 kernels differ by CPU: on an AVX2-only CPU (no VNNI) these 61 scores were up to 0.0066
    # from the shipped ones (mean 0.0006), while the fp32 export of the same weights was up to 0.46 off.
    assert np.abs(scores - shipped.score[picked]).max() < 0.02
