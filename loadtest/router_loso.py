"""Leave-one-source-out figures for the router: train on every source but one, test on it.

Sources: the generated rows of each language group (evals/router-seeds/: English; German, French
and Spanish; Chinese, Japanese and Hindi) and the hand-written prompts of evals/router-prompts.jsonl
(one source: every set written by hand, train and test rows alike). For each, the whole training
procedure of `gateway router-train` (its cross-validated choice of L2 and thresholds) runs
on the other sources, and the model is scored on every row of the left-out source, overall and by
kind, with the tiers' prices of config/examples/tiered.yaml. Concordance is given against the
labels (rubric A) and, on the rows a second reader labelled (`tier_b`), against rubric B.

    python -m loadtest.router_loso [--fold hand-written ...]

Two to four minutes per fold on 2 cores.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gateway.offline import router_training as training
from gateway.routing.classifier import pick
from loadtest.report import footer

PRICES = [(0.15, 0.60), (0.40, 1.60), (2.50, 10.00)]
"""config/examples/tiered.yaml's small, medium and large pools, per 1M input and output tokens."""
FOLDS = {
    "generated-en": {"generated-en"},
    "generated-de+fr+es": {"generated-de", "generated-fr", "generated-es"},
    "generated-zh+ja+hi": {"generated-zh", "generated-ja", "generated-hi"},
}
"""Every other source is in the fold "hand-written"."""
HAND_WRITTEN = Path(__file__).resolve().parents[1] / "evals" / "router-prompts.jsonl"


def fold_of(source: str) -> str:
    return next((name for name, members in FOLDS.items() if source in members), "hand-written")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fold", action="append", default=[], help="only these folds (repeatable)")
    args = parser.parse_args()

    rows = training.read_labelled(HAND_WRITTEN) + training.generated_rows()
    tiers = ["small", "medium", "large"]
    data = training.embedded(rows, tiers)
    folds = np.array([fold_of(r.source) for r in rows])
    kinds = np.array([r.column("kind") or "(hand-written, no kind)" for r in rows])
    print(f"{len(rows)} rows; folds: " + ", ".join(f"{f} {int(np.sum(folds == f))}" for f in sorted(set(folds))) + "\n")
    print(
        "| left out | rows | accuracy | under-routed | over-routed | cost vs oracle | concordance | rubric B: rows, concordance |"
    )
    print("|---|---|---|---|---|---|---|---|")
    by_kind: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for name in args.fold or [*FOLDS, "hand-written"]:
        held = np.flatnonzero(folds == name)
        rest = np.flatnonzero(folds != name)
        groups = [training.group_of(rows[i], i) for i in rest]
        model, _ = training.train(data.take(rest), tiers, groups=groups)
        test = data.take(held)
        scores = training.scores_of(model, test)
        routed = np.array([pick(float(s), model.thresholds) for s in scores])
        f = training.figures(routed, test.labels, test.tokens, PRICES)
        second = test.second >= 0  # rows a second reader labelled (rubric B)
        b = f"{int(second.sum())}, {training.concordance(scores[second], test.second[second]):.3f}" if second.any() else "0"
        print(
            f"| {name} | {f['rows']} | {f['accuracy']:.3f} | {f['under_routed']:.3f} | {f['over_routed']:.3f} | "
            f"{f['cost_vs_oracle']:.2f}x | {training.concordance(scores, test.labels):.3f} | {b} |",
            flush=True,
        )
        for index, tier in zip(held, routed, strict=True):
            by_kind[str(kinds[index])].append((int(tier), int(data.labels[index])))
    print("\nby kind, every left-out row:\n")
    print("| kind | rows | accuracy | under-routed | over-routed |")
    print("|---|---|---|---|---|")
    for kind, pairs in sorted(by_kind.items()):
        routed_k, labels_k = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        print(
            f"| {kind} | {len(pairs)} | {np.mean(routed_k == labels_k):.3f} | {np.mean(routed_k < labels_k):.3f} | "
            f"{np.mean(routed_k > labels_k):.3f} |"
        )
    print()
    print("\n".join(footer("loadtest.router_loso")))


if __name__ == "__main__":
    main()
