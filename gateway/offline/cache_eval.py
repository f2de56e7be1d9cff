"""`gateway cache-eval FILE.jsonl`: how often the semantic layer would be right on labelled pairs.

Each line is `{"a": "...", "b": "...", "same": true|false}`, optionally with `"kind"` (what makes a
negative hard, reported per kind), `"source"` (the set it came from) and `"split"`; `--source`
keeps the rows of some sources only (evals/cache-pairs.jsonl holds every set, one source each).
A pair is a predicted hit when the cosine of its embeddings
reaches the threshold and the veto lets it through. Printed: precision, recall, false-hit rate
(false hits / negatives) and hit rate at the threshold, a sweep of thresholds with and without
the veto (plain cosine is what most semantic caches ship), and false hits per kind.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from gateway.cache.veto import veto


class Pair(msgspec.Struct, forbid_unknown_fields=True):
    a: str
    b: str
    same: bool
    kind: str = ""
    source: str = ""
    split: str = ""


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    false_hit_rate: float
    hit_rate: float

    def row(self) -> str:
        return f"{self.precision:.3f} | {self.recall:.3f} | {self.false_hit_rate:.3f} | {self.hit_rate:.3f}"


def read_pairs(path: Path, sources: Sequence[str] = ()) -> list[Pair]:
    """The pairs of `path` (of `sources` only, when given)."""
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                pairs.append(msgspec.json.decode(line, type=Pair))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise SystemExit(f"{path}:{number}: {exc}") from None
    if sources:
        pairs = [p for p in pairs if p.source in sources]
        if not pairs:
            raise SystemExit(f"{path} has no pairs from {', '.join(sources)}")
    return pairs


def score(pairs: Sequence[Pair], hits: Sequence[bool]) -> Scores:
    tp = sum(h and p.same for p, h in zip(pairs, hits, strict=True))
    fp = sum(h and not p.same for p, h in zip(pairs, hits, strict=True))
    positives = sum(p.same for p in pairs)
    negatives = len(pairs) - positives
    return Scores(
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / positives if positives else 0.0,
        false_hit_rate=fp / negatives if negatives else 0.0,
        hit_rate=(tp + fp) / len(pairs) if pairs else 0.0,
    )


def report(pairs: Sequence[Pair], cosines: np.ndarray, threshold: float) -> str:
    vetoed = [veto(p.a, p.b) is not None for p in pairs]
    at = [bool(c >= threshold) and not v for c, v in zip(cosines, vetoed, strict=True)]
    lines = [
        f"{len(pairs)} pairs: {sum(p.same for p in pairs)} same, {sum(not p.same for p in pairs)} different",
        "",
        f"at threshold {threshold:g} with the veto:",
        "precision | recall | false-hit rate | hit rate",
        score(pairs, at).row(),
        "",
        "threshold | with veto: precision | recall | false-hit rate | hit rate"
        " || cosine only: precision | recall | false-hit rate | hit rate",
    ]
    for t in (0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98):
        plain = [bool(c >= t) for c in cosines]
        guarded = [h and not v for h, v in zip(plain, vetoed, strict=True)]
        lines.append(f"{t:.2f} | {score(pairs, guarded).row()} || {score(pairs, plain).row()}")
    false_hits = Counter(p.kind or "unlabelled" for p, h in zip(pairs, at, strict=True) if h and not p.same)
    negatives = Counter(p.kind or "unlabelled" for p in pairs if not p.same)
    lines += ["", "false hits by kind of negative (at the threshold, with the veto):"]
    lines += [f"  {kind}: {false_hits[kind]} of {n}" for kind, n in sorted(negatives.items())]
    return "\n".join(lines)


def run(path: Path, threshold: float, sources: Sequence[str] = ()) -> str:
    from gateway.cache.embedder import OnnxEmbedder

    pairs = read_pairs(path, sources)
    embedder = OnnxEmbedder()
    try:
        a = asyncio.run(embedder.embed([p.a for p in pairs]))
        b = asyncio.run(embedder.embed([p.b for p in pairs]))
    finally:
        embedder.close()
    return report(pairs, (a * b).sum(axis=1), threshold)
