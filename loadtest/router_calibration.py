"""Boundaries placed from a few labels: concordance, and thresholds fitted on a share of a labelled
set (`gateway router-calibrate`'s fitting) scored on the rest.

For each labelling column (two readers' rubrics: `tier` and `tier_b`), the shipped classifier
scores every row once; then, for each of `--repeats` random splits (stratified by tier), the
thresholds are fitted on `--share` of the rows with the under-routing bound, and the other rows are
routed with them.

    python -m loadtest.router_calibration evals/router-frozen.jsonl --config config/examples/tiered.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gateway import config
from gateway.offline import router_training as training
from gateway.routing.classifier import pick
from loadtest.report import footer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--config", default=None)
    parser.add_argument("--router", default="auto")
    parser.add_argument("--labels", default="tier,tier_b", help="labelling columns, comma-separated")
    parser.add_argument("--share", type=float, default=0.3)
    parser.add_argument("--under", type=float, default=training.CALIBRATE_UNDER)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    model = config.load(args.config).classifiers[args.router]
    columns = args.labels.split(",")
    texts = training.embedded(training.read_labelled(Path(args.file), label=columns[0]), model.tiers)  # once for every labelling
    scores = training.scores_of(model, texts)
    print(
        f"{args.file}; thresholds fitted on {args.share:.0%} of the rows (under-routing bound {args.under}), scored on the rest; "
        f"{args.repeats} random splits\n"
    )
    print("| labels | rows | concordance | accuracy (mean, 10th-90th pct) | under-routed (mean, 90th pct) | over-routed (mean) |")
    print("|---|---|---|---|---|---|")
    for label in columns:
        rows = training.read_labelled(Path(args.file), label=label)
        data = dataclasses.replace(texts, labels=np.array([list(model.tiers).index(r.tier) for r in rows]))
        rng = np.random.default_rng(0)
        acc, under, over = [], [], []
        for _ in range(args.repeats):
            fit = np.zeros(len(rows), dtype=bool)
            for tier in range(len(model.tiers)):
                members = np.flatnonzero(data.labels == tier)
                take = round(len(members) * args.share)
                fit[rng.choice(members, size=take, replace=False)] = True
            thresholds = training.calibrate_thresholds(scores[fit], data.labels[fit], len(model.tiers), args.under)
            routed = np.array([pick(float(s), thresholds) for s in scores[~fit]])
            held = data.labels[~fit]
            acc.append(np.mean(routed == held))
            under.append(np.mean(routed < held))
            over.append(np.mean(routed > held))
        print(
            f"| {label} | {len(rows)} | {training.concordance(scores, data.labels):.3f} | {np.mean(acc):.3f} "
            f"({np.percentile(acc, 10):.3f}-{np.percentile(acc, 90):.3f}) | {np.mean(under):.3f} "
            f"({np.percentile(under, 90):.3f}) | {np.mean(over):.3f} |",
            flush=True,
        )
    print()
    print("\n".join(footer("loadtest.router_calibration")))


if __name__ == "__main__":
    main()
