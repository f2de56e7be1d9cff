"""`gateway cache-eval FILE.jsonl`: how often the semantic layer would be right on labelled pairs.

Each line is `{"a": "...", "b": "...", "same": true|false}`, optionally with `"kind"` (what makes a
negative hard, reported per kind), `"source"` (the set it came from) and `"split"`; `--source`
keeps the rows of some sources only (evals/cache-pairs.jsonl holds every set, one source each).
A pair is a predicted hit when the exact layer joins it (the two differ only in case, spacing or
trailing punctuation), or when the cosine of its embeddings reaches the threshold and the veto lets
it through. Printed: precision, recall, false-hit rate
(false hits / negatives) and hit rate at the threshold, a sweep of thresholds with and without
the veto (plain cosine is what most semantic caches ship), and hits per kind (duplicates found,
false hits). `--json` prints the figures at the threshold as one object instead: `precision`,
`recall`, `false_hit_rate`, `hit_rate`, `threshold`, `pairs`, and `by_kind`, each kind with its
`pairs` and `hits` and whichever of `recall` (kinds of duplicates), `false_hit_rate` (kinds of
negatives) and `precision` (kinds with both) its pairs define.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from gateway.cache.keys import normal_text
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


def by_kind(pairs: Sequence[Pair], hits: Sequence[bool]) -> dict[str, dict[str, float | int]]:
    """Per kind: pairs, hits, and the scores its pairs define."""
    kinds: dict[str, tuple[list[Pair], list[bool]]] = {}
    for p, h in zip(pairs, hits, strict=True):
        members, their_hits = kinds.setdefault(p.kind or ("unlabelled same" if p.same else "unlabelled"), ([], []))
        members.append(p)
        their_hits.append(h)
    out: dict[str, dict[str, float | int]] = {}
    for kind, (group, found) in sorted(kinds.items()):
        s = score(group, found)
        row: dict[str, float | int] = {"pairs": len(group), "hits": sum(found)}
        same = sum(p.same for p in group)
        if same:
            row["recall"] = round(s.recall, 4)
        if same < len(group):
            row["false_hit_rate"] = round(s.false_hit_rate, 4)
        if 0 < same < len(group):
            row["precision"] = round(s.precision, 4)
        out[kind] = row
    return out


def predicted(pairs: Sequence[Pair], cosines: np.ndarray, threshold: float) -> tuple[list[bool], list[bool]]:
    """Hits at `threshold` with the veto (and pairs the exact layer joins: they differ only in
    case, spacing or trailing punctuation), and which pairs the veto refused."""
    vetoed = [veto(p.a, p.b) is not None for p in pairs]
    exact = [normal_text(p.a) == normal_text(p.b) for p in pairs]
    hits = [e or (bool(c >= threshold) and not v) for c, v, e in zip(cosines, vetoed, exact, strict=True)]
    return hits, vetoed


def figures(pairs: Sequence[Pair], cosines: np.ndarray, threshold: float) -> dict[str, object]:
    """The figures at the threshold, as `--json` prints them."""
    at, _ = predicted(pairs, cosines, threshold)
    s = score(pairs, at)
    return {
        "pairs": len(pairs),
        "threshold": threshold,
        "precision": round(s.precision, 4),
        "recall": round(s.recall, 4),
        "false_hit_rate": round(s.false_hit_rate, 4),
        "hit_rate": round(s.hit_rate, 4),
        "by_kind": by_kind(pairs, at),
    }


def report(pairs: Sequence[Pair], cosines: np.ndarray, threshold: float) -> str:
    at, vetoed = predicted(pairs, cosines, threshold)
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
    kinds = by_kind(pairs, at)
    found = {k: r for k, r in kinds.items() if "recall" in r and "false_hit_rate" not in r}
    false = {k: r for k, r in kinds.items() if "false_hit_rate" in r}
    if found:
        lines += ["", "duplicates found by kind (at the threshold, with the veto):"]
        lines += [f"  {kind}: {r['hits']} of {r['pairs']}" for kind, r in found.items()]
    lines += ["", "false hits by kind of negative (at the threshold, with the veto):"]
    lines += [f"  {kind}: {r['hits']} of {r['pairs']}" for kind, r in false.items()]
    return "\n".join(lines)


def run(path: Path, threshold: float, sources: Sequence[str] = (), as_json: bool = False) -> str:
    from gateway.cache.embedder import OnnxEmbedder

    pairs = read_pairs(path, sources)
    embedder = OnnxEmbedder()
    try:
        a = asyncio.run(embedder.embed([p.a for p in pairs]))
        b = asyncio.run(embedder.embed([p.b for p in pairs]))
    finally:
        embedder.close()
    cosines = (a * b).sum(axis=1)
    if as_json:
        return msgspec.json.encode(figures(pairs, cosines, threshold)).decode()
    return report(pairs, cosines, threshold)
