"""`gateway cache-eval`: the scores, and the command on the shipped pairs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from gateway.offline.cache_eval import Judged, Pair, predicted, read_pairs, report, score
from tests.helpers.gateway import ROOT

PAIRS = ROOT / "evals" / "cache-pairs.jsonl"


def test_scores_count_hits_against_labels() -> None:
    pairs = [Pair("a", "b", True), Pair("c", "d", True), Pair("e", "f", False), Pair("g", "h", False)]
    s = score(pairs, [True, False, True, False])
    assert (s.precision, s.recall, s.false_hit_rate, s.hit_rate) == (0.5, 0.5, 0.5, 0.5)
    none = score(pairs, [False] * 4)
    assert (none.precision, none.recall, none.hit_rate) == (1.0, 0.0, 0.0)


def test_pairs_the_exact_layer_joins_are_hits_whatever_their_cosine_or_score() -> None:
    judged = Judged(np.array([0.0, 0.0]), [True, False], [None, None], np.array([0.0, 0.0]))
    assert predicted(judged, floor=0.9, threshold=0.5) == [True, False]


def test_a_semantic_hit_needs_the_floor_the_rules_and_the_threshold() -> None:
    judged = Judged(np.array([0.95, 0.95, 0.7, 0.95]), [False] * 4, [None, "numbers", None, None], np.array([0.9, 0.9, 0.9, 0.4]))
    assert predicted(judged, floor=0.8, threshold=0.5) == [True, False, False, False]
    assert predicted(judged, floor=0.8, threshold=None) == [True, False, False, True]  # no verifier: cosine and rules


def test_the_shipped_set_is_large_and_half_hard_negatives() -> None:
    pairs = read_pairs(PAIRS, ["pairs"])
    negatives = [p for p in pairs if not p.same]
    assert len(pairs) >= 200 and len(negatives) * 2 >= len(pairs)
    assert {p.kind for p in negatives} >= {"entity", "number", "negation", "direction", "format"}


def test_the_report_rounds_each_figure_once() -> None:
    """61 of 65 hits right is 0.93846: 0.938, not 0.939 (0.9385 rounded again)."""
    same, different = [True] * 61 + [False] * 46, [True] * 4 + [False] * 85
    pairs = [Pair(f"q{i}", f"p{i}", True) for i in range(107)] + [Pair(f"n{i}", f"m{i}", False) for i in range(89)]
    hits = same + different
    judged = Judged(np.zeros(196), hits, [None] * 196, np.zeros(196))
    lines = report(pairs, judged, floor=0.5, threshold=None).splitlines()
    assert lines[lines.index("precision | recall | false-hit rate | hit rate") + 1].startswith("0.938 | 0.570 | 0.045 (")


KNOWN = [
    {"a": "How do I bake bread?", "b": "How do I bake bread?", "same": True, "kind": "identical"},
    {"a": "What is the capital of Peru?", "b": "What is the capital of Peru?", "same": True, "kind": "identical"},
    {"a": "Tell me a joke about cats.", "b": "Tell me a joke about cats.", "same": False, "kind": "mislabelled"},
    {"a": "How do I bake bread?", "b": "What is the tallest mountain on Mars?", "same": False, "kind": "unrelated"},
]
"""Pairs whose outcome is known: identical prompts always hit and unrelated ones never do, so two
true hits, one false hit (an identical pair labelled different) and one true miss."""


def cache_eval(tmp_path: Path, *flags: str) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in KNOWN))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "cache-eval", str(path), "--threshold", "0.9", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_command_reports_the_figures_of_pairs_whose_outcome_is_known(tmp_path: Path) -> None:
    lines = cache_eval(tmp_path).splitlines()
    assert lines[0] == "4 pairs: 2 same, 2 different"
    assert lines[2].startswith("operating point: verifier threshold ")
    figures = lines[lines.index("precision | recall | false-hit rate | hit rate") + 1]
    assert figures.startswith("0.667 | 1.000 | 0.500 (95% interval ") and figures.endswith(" | 0.750")
    assert "  identical: 2 of 2" in lines  # duplicates found
    assert "  mislabelled: 1 of 1" in lines and "  unrelated: 0 of 1" in lines  # false hits
    assert sum(line.startswith(("0.7000 |", "0.9000 |", "0.9800 |")) for line in lines) == 3  # the sweep
    assert any(line.startswith("  en: 4 |") for line in lines)  # by language


def test_the_command_prints_the_same_figures_as_json(tmp_path: Path) -> None:
    figures = json.loads(cache_eval(tmp_path, "--json"))
    assert (figures["precision"], figures["recall"], figures["false_hit_rate"]) == (0.6667, 1.0, 0.5)
    low, high = figures["false_hit_interval"]
    assert low < 0.5 < high and 0 < figures["threshold"] <= 1 and figures["target_false_hit_rate"] == 0.01
    assert figures["by_lang"]["en"]["pairs"] == 4
    assert figures["by_kind"] == {
        "identical": {"pairs": 2, "hits": 2, "recall": 1.0},
        "mislabelled": {"pairs": 1, "hits": 1, "false_hit_rate": 1.0},
        "unrelated": {"pairs": 1, "hits": 0, "false_hit_rate": 0.0},
    }
