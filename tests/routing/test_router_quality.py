"""A floor under the shipped router's quality: its figures on the frozen test splits, and test
prompts that are not training rows.

Three frozen splits that nothing was fitted on (evals/router-frozen.jsonl, -frozen3.jsonl and
-frozen24.jsonl; frozen24 was committed before the shipped classifier was made and measured once
after). The shipped classifier's figures on them are the floor (frozen24's first look is the figure
in loadtest/RESULTS.md, "Tiered routing"; frozen2 and frozen3 had been read before): a change that
routes them worse than the margin allows (dropping the head, a feature, the instruction split, a
looser threshold) fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from gateway.cache.embedder import OnnxEmbedder
from gateway.offline.router_training import Data, concordance, figures, generated_rows, read_labelled, scores_of, split
from gateway.routing.classifier import ComplexityModel, pick
from tests.helpers.gateway import ROOT

SPLITS = {
    "router-frozen.jsonl": {"accuracy": 0.972, "under_routed": 0.014, "cost_vs_oracle": 1.026, "concordance": 0.999},
    "router-frozen3.jsonl": {"accuracy": 0.974, "under_routed": 0.000, "cost_vs_oracle": 1.034, "concordance": 0.998},
    "router-frozen24.jsonl": {"accuracy": 0.841, "under_routed": 0.023, "cost_vs_oracle": 1.029, "concordance": 0.980},
}
"""The shipped classifier's figures on each frozen split with config/examples/tiered.yaml's prices
(its first look at frozen24; frozen2 and frozen3 had been read before, not tuned on)."""
MARGIN = 0.03
"""How far accuracy may fall and under-routing rise (a retrain moves a few prompts); cost may rise 0.05x."""
PRICES = [(0.15, 0.60), (0.40, 1.60), (2.50, 10.00)]
"""config/examples/tiered.yaml's small, medium and large pools, per 1M input and output tokens."""


@pytest.fixture(scope="module")
def embedder() -> Iterator[OnnxEmbedder]:
    found = OnnxEmbedder()
    yield found
    found.close()


@pytest.fixture(scope="module", params=sorted(SPLITS))
def frozen(request: pytest.FixtureRequest, embedder: OnnxEmbedder) -> tuple[Data, dict[str, float]]:
    rows = read_labelled(ROOT / "evals" / request.param)
    return Data.build(rows, ("small", "medium", "large"), embedder.embed_now), SPLITS[request.param]


def route(model: ComplexityModel, data: Data) -> tuple[np.ndarray, np.ndarray]:
    scores = scores_of(model, data)
    return scores, np.array([pick(float(s), model.thresholds) for s in scores])


def test_the_shipped_router_holds_its_frozen_split_figures(frozen: tuple[Data, dict[str, float]]) -> None:
    data, reported = frozen
    scores, routed = route(ComplexityModel.load(ROOT / "config" / "router" / "model.json"), data)
    found = figures(routed, data.labels, data.tokens, PRICES)
    assert found["accuracy"] >= reported["accuracy"] - MARGIN, found
    assert found["under_routed"] <= reported["under_routed"] + MARGIN, found
    assert found["cost_vs_oracle"] <= reported["cost_vs_oracle"] + 0.05, found
    assert concordance(scores, data.labels) >= reported["concordance"] - MARGIN


def test_the_floor_can_fail_without_the_features(frozen: tuple[Data, dict[str, float]]) -> None:
    """The embedding alone (every feature at its training mean) routes the same split past the margin."""
    data, reported = frozen
    model = ComplexityModel.load(ROOT / "config" / "router" / "model.json")
    blind = dataclasses.replace(data, feats=np.tile(model.mean, (len(data.labels), 1)))
    _, routed = route(model, blind)
    found = figures(routed, blind.labels, blind.tokens, PRICES)
    assert found["accuracy"] < reported["accuracy"] - MARGIN or found["under_routed"] > reported["under_routed"] + MARGIN


def test_no_prompt_a_test_sends_through_the_router_is_a_training_row(embedder: OnnxEmbedder) -> None:
    from tests import test_routing_tiers

    asked = [test_routing_tiers.EASY, test_routing_tiers.HARD, "How many moons does Mars have?"]
    asked += ["How many moons does Jupiter have?", "Prove that there are infinitely many primes, step by step, rigorously."]
    training = [r.text() for r in split(read_labelled(ROOT / "evals" / "router-prompts.jsonl"), "train")]
    training += [r.text() for r in generated_rows()]
    assert not set(asked) & set(training)
    vectors = np.vstack([embedder.embed_now(training[i : i + 256]) for i in range(0, len(training), 256)])
    nearest = (embedder.embed_now(asked) @ vectors.T).max(axis=1)
    assert nearest.max() < 0.95, dict(zip(asked, nearest.round(4).tolist(), strict=True))
