"""Nested cross-validation of `gateway router-train`: the whole training procedure (its own inner
cross-validation, the choice of blend, k, L2 and thresholds) is run on four fifths of the prompts
and scored on the fifth it never saw, for every fifth. An estimate of how a retrained router does on
unseen prompts, from prompts that have all been seen; a fresh set measured once is the real test.

    python -m loadtest.router_cv evals/router-prompts.jsonl
    python -m loadtest.router_cv FILE... --targets 0.035,0.025 --seeds 1,2

Every row of every file is used, train and test alike.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRICES = [(0.15, 0.60), (0.40, 1.60), (2.50, 10.00)]
"""config/examples/tiered.yaml's small, medium and large pools, per 1M input and output tokens."""


def main() -> None:
    from gateway.cache.embedder import OnnxEmbedder
    from gateway.offline import router_training as training
    from gateway.routing.classifier import pick

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--targets", default=str(training.UNDER_TARGET), help="cross-validated under-routing targets")
    parser.add_argument("--seeds", default="1,2", help="one outer split per seed")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()

    rows = [row for f in args.files for row in training.read_labelled(Path(f))]
    tiers = ["small", "medium", "large"]
    embedder = OnnxEmbedder()
    try:
        data = training.Data.build(rows, tiers, embedder.embed_now)
    finally:
        embedder.close()
    oracle = training.relative_cost(data.labels, data.tokens, PRICES)
    print(f"{len(rows)} prompts from {', '.join(args.files)}; {args.folds} outer folds\n")
    print("| under-routing target | seed | accuracy | under-routed | over-routed | cost / oracle's |")
    print("|---|---|---|---|---|---|")
    for target in (float(t) for t in args.targets.split(",")):
        training.UNDER_TARGET = target
        for seed in (int(s) for s in args.seeds.split(",")):
            parts = np.array_split(np.random.default_rng(100 + seed).permutation(len(rows)), args.folds)
            routed = np.zeros(len(rows), dtype=int)
            for i, held in enumerate(parts):
                rest = np.concatenate([p for j, p in enumerate(parts) if j != i])
                model, _ = training.train(data.take(rest), tiers)
                for j in held:
                    routed[j] = pick(model.score(model.probabilities(data.feats[j], data.vectors[j])), model.thresholds)
            report = training.Report("", routed, data.labels, training.relative_cost(routed, data.tokens, PRICES))
            print(
                f"| {target} | {seed} | {report.accuracy:.3f} | {report.under:.3f} | {report.over:.3f} | "
                f"{report.cost / oracle:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
