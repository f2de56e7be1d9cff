"""Leave-one-source-out figures for the cache verifier: train on every source but one, test on it.

Sources: the generated pairs of each language (evals/cache-seeds/, one source per language; Chinese
and Japanese together, as most of their pairs are exact-only) and the hand-written sets of
evals/cache-pairs.jsonl (one source). For each, a verifier is trained from scratch on the `train`
split of the other sources, its threshold is picked for the target on the `calibration` split of
the other sources, and it is scored on every pair of the left-out source (both splits), as
`gateway cache-eval` scores a file: the exact layer, the cosine floor, the rules, the verifier.

    python -m loadtest.cache_loso [--epochs 2]

Each fold trains a verifier (about 4 minutes per epoch on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from gateway.cache.keys import normal_text
from gateway.cache.verifier import Calibration, threshold_for, wilson
from gateway.offline.cache_eval import Pair, score
from gateway.offline.verifier_training import readable_with_bundled_tokenizer, score_rows, train, training_pairs
from gateway.settings import CacheSettings
from loadtest.report import footer

FOLDS = {
    "generated-en": {"generated-en"},
    "generated-de": {"generated-de"},
    "generated-fr": {"generated-fr"},
    "generated-es": {"generated-es"},
    "generated-ja+zh": {"generated-ja", "generated-zh"},
}
"""Each hand-written source is in the fold "hand-written" (added below)."""


def calibration_of(rows: list[dict[str, object]]) -> Calibration:
    return Calibration(
        np.array([r["same"] for r in rows], bool),
        np.array([r["cosine"] for r in rows], np.float32),
        np.array([r["ruled"] for r in rows], bool),
        np.array([r["score"] for r in rows], np.float32),
        [str(r["kind"]) for r in rows],
    )


def fold(name: str, left_out: set[str], everything: list[Pair], epochs: int, target: float, floor: float) -> str:
    train_set = [p for p in everything if p.split == "train" and p.source not in left_out]
    calibration = [p for p in everything if p.split == "calibration" and p.source not in left_out]
    test = [p for p in everything if p.source in left_out]
    with tempfile.TemporaryDirectory() as out:
        train(train_set, Path(out), epochs=epochs, log=lambda m: print(f"[{name}] {m}", flush=True))
        weights = Path(out) / "verifier.safetensors"
        point = threshold_for(calibration_of(score_rows(weights, calibration)), target, floor)
        rows = score_rows(weights, test)
    hits = [
        normal_text(p.a) == normal_text(p.b)
        or (float(r["cosine"]) >= floor and not r["ruled"] and float(r["score"]) >= point.threshold)  # type: ignore[arg-type]
        for p, r in zip(test, rows, strict=True)
    ]
    s = score(test, hits)
    false = sum(h and not p.same for p, h in zip(test, hits, strict=True))
    lo, hi = wilson(false, sum(not p.same for p in test))
    typos = [(p, h) for p, h in zip(test, hits, strict=True) if p.kind == "typo"]
    typo = f"{sum(h for _, h in typos) / len(typos):.3f}" if typos else "-"
    return (
        f"| {name} | {len(test)} | {point.threshold:.4f} | {s.precision:.3f} | {s.recall:.3f} | "
        f"{s.false_hit_rate:.3f} ({lo:.3f}-{hi:.3f}) | {typo} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="per fold (the shipped verifier: 2)")
    parser.add_argument("--fold", action="append", default=[], help="only these folds (repeatable)")
    args = parser.parse_args()
    settings = CacheSettings()
    readable = readable_with_bundled_tokenizer()
    train_set, calibration = training_pairs(lambda a, b: True)
    everything = [*train_set, *calibration]
    folds = dict(FOLDS)
    folds["hand-written"] = {p.source for p in everything if not p.source.startswith("generated-")}
    lines = [
        f"target false-hit rate {settings.target_false_hit_rate}, cosine floor {settings.threshold},"
        f" {args.epochs} epoch(s) per fold",
        "",
        "| left out | pairs | threshold | precision | recall | false-hit rate (95% interval) | typos found |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, left_out in folds.items():
        if args.fold and name not in args.fold:
            continue
        # The left-out source is tested on all its pairs; the others train and calibrate on what the model can read.
        kept = [p for p in everything if p.source in left_out or readable(p.a, p.b)]
        lines.append(fold(name, left_out, kept, args.epochs, settings.target_false_hit_rate, settings.threshold))
        print(lines[-1], flush=True)
    print("\n".join([*lines, "", *footer("loadtest.cache_loso")]))


if __name__ == "__main__":
    main()
