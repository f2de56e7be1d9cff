"""Leave-one-source-out figures for the router: train on every source but one, test on it.

Sources: the generated rows of each language group (evals/router-seeds/: English; German, French
and Spanish; Chinese, Japanese and Hindi) and the hand-written prompts of evals/router-prompts.jsonl
(one source: every set written by hand, train and test rows alike). For each, the whole training
procedure of `gateway router-train` (its cross-validated choice of L2 and thresholds) runs
on the other sources, and the model is scored on every row of the left-out source, overall and by
kind, with the tiers' prices of config/examples/tiered.yaml. Concordance is given against the
labels (rubric A) and, on the rows a second reader labelled (`tier_b`), against rubric B.

With `--each-written-source`, the folds are the hand-written sources one at a time instead (each
written in a style of its own: `labelled`, `fresh`, ..., `frozen5`), the generated rows always on
the training side. `--place-on all` places the thresholds on every training row's cross-validated
score, generated rows included: the alternative the router's placement (written rows only) is
measured against.

    python -m loadtest.router_loso [--fold hand-written ...] [--each-written-source] [--place-on all]

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
    parser.add_argument("--each-written-source", action="store_true", help="leave out each hand-written source in turn")
    parser.add_argument("--place-on", choices=("written", "all"), default="written", help="the rows that place the thresholds")
    args = parser.parse_args()

    rows = training.read_labelled(HAND_WRITTEN) + training.generated_rows()
    tiers = ["small", "medium", "large"]
    data = training.embedded(rows, tiers)
    written = training.placing_rows(rows)
    if args.each_written_source:
        folds = np.array([r.source if w else "generated" for r, w in zip(rows, written, strict=True)])
        names = args.fold or list(dict.fromkeys(r.source for r, w in zip(rows, written, strict=True) if w))
    else:
        folds = np.array([fold_of(r.source) for r in rows])
        names = args.fold or [*FOLDS, "hand-written"]
    placing = np.array(written) if args.place_on == "written" else np.ones(len(rows), dtype=bool)
    kinds = np.array([r.column("kind") or "(hand-written, no kind)" for r in rows])
    print(f"{len(rows)} rows; folds: " + ", ".join(f"{f} {int(np.sum(folds == f))}" for f in sorted(set(folds))) + "\n")
    print(
        "| left out | rows | accuracy | under-routed | over-routed | cost vs oracle | concordance | rubric B: rows, concordance |"
    )
    print("|---|---|---|---|---|---|---|---|")
    by_kind: dict[str, list[tuple[int, int]]] = defaultdict(list)
    pooled: list[tuple[np.ndarray, np.ndarray]] = []
    for name in names:
        held = np.flatnonzero(folds == name)
        rest = np.flatnonzero(folds != name)
        groups = [training.group_of(rows[i], i) for i in rest]
        model, _ = training.train(data.take(rest), tiers, groups=groups, placing=placing[rest])
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
        pooled.append((held, routed))
    every = np.concatenate([h for h, _ in pooled])
    f = training.figures(np.concatenate([r for _, r in pooled]), data.labels[every], data.tokens[every], PRICES)
    print(
        f"| every left-out row | {f['rows']} | {f['accuracy']:.3f} | {f['under_routed']:.3f} | {f['over_routed']:.3f} | "
        f"{f['cost_vs_oracle']:.2f}x | | |"
    )
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
