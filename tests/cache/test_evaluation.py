"""`gateway cache-eval`: the scores, and the command on the shipped pairs."""

from __future__ import annotations

import subprocess
import sys

from gateway.offline.cache_eval import Pair, read_pairs, score
from tests.helpers.gateway import ROOT

PAIRS = ROOT / "evals" / "cache-pairs.jsonl"


def test_scores_count_hits_against_labels() -> None:
    pairs = [Pair("a", "b", True), Pair("c", "d", True), Pair("e", "f", False), Pair("g", "h", False)]
    s = score(pairs, [True, False, True, False])
    assert (s.precision, s.recall, s.false_hit_rate, s.hit_rate) == (0.5, 0.5, 0.5, 0.5)
    none = score(pairs, [False] * 4)
    assert (none.precision, none.recall, none.hit_rate) == (1.0, 0.0, 0.0)


def test_the_shipped_set_is_large_and_half_hard_negatives() -> None:
    pairs = read_pairs(PAIRS, ["pairs"])
    negatives = [p for p in pairs if not p.same]
    assert len(pairs) >= 200 and len(negatives) * 2 >= len(pairs)
    assert {p.kind for p in negatives} >= {"entity", "number", "negation", "direction", "format"}


def test_the_command_reports_precision_recall_and_a_sweep() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "cache-eval", str(PAIRS), "--source", "pairs", "--threshold", "0.9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{len(read_pairs(PAIRS, ['pairs']))} pairs")
    precision, recall, false_hits, hit_rate = (float(x) for x in lines[4].split(" | "))
    assert 0 <= false_hits <= 1 and 0 <= hit_rate <= 1 and 0 <= precision <= 1 and 0 <= recall <= 1
    assert sum(line[:4] in ("0.70", "0.90", "0.98") for line in lines) == 3
