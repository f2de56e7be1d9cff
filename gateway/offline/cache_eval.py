"""`gateway cache-eval FILE.jsonl`: how often the semantic cache would be right on labelled pairs.

Each line is `{"a": "...", "b": "...", "same": true|false}`, optionally with `"kind"` (what kind of
duplicate or hard negative it is), `"source"` (the set it came from), `"split"` and `"lang"`
(figures are reported per language; "" is English). `--source` keeps the rows of some sources.

A pair is a predicted hit as the gateway would decide it for a cache holding `a` and asked `b`:
the exact layer joins it (the two differ only in case, spacing or trailing punctuation), or the
cosine of its embeddings reaches the floor (`cache.threshold`), the rules let it through
(rules.py) and the verifier's score reaches the threshold picked for `cache.target_false_hit_rate`
on the shipped calibration pairs. Printed: that operating point (its false-hit rate on the
calibration pairs with a 95% interval), precision, recall, false-hit rate (false hits /
negatives, with its interval) and hit rate on the file; a sweep of verifier thresholds and the
plain-cosine figures beside them (what most semantic caches ship); and per kind and per
language, how many duplicates were found and how many negatives were hit. `--json` prints the
figures as one object: `precision`, `recall`, `false_hit_rate`, `false_hit_interval`,
`hit_rate`, `floor`, `threshold`, `target_false_hit_rate`, `pairs`, `by_kind`, `by_lang`; each
kind or language with its `pairs` and `hits` and whichever of `recall`, `false_hit_rate` and
`precision` its pairs define (a language also `unreadable`: pairs that get exact hits only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from gateway.cache.keys import normal_text
from gateway.cache.rules import refuse

if TYPE_CHECKING:
    from gateway.cache.verifier import OperatingPoint


class Pair(msgspec.Struct, forbid_unknown_fields=True):
    a: str
    b: str
    same: bool
    kind: str = ""
    source: str = ""
    split: str = ""
    lang: str = ""
    """The language of the pair ("" is English): figures are reported per language too."""


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


def by_kind(pairs: Sequence[Pair], hits: Sequence[bool], by: str = "kind") -> dict[str, dict[str, float | int]]:
    """Per kind (or per `lang`): pairs, hits, and the scores its pairs define."""
    kinds: dict[str, tuple[list[Pair], list[bool]]] = {}
    for p, h in zip(pairs, hits, strict=True):
        name = (p.lang or "en") if by == "lang" else p.kind or ("unlabelled same" if p.same else "unlabelled")
        members, their_hits = kinds.setdefault(name, ([], []))
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


@dataclass(frozen=True)
class Judged:
    """What the gateway's parts say of each pair."""

    cosine: np.ndarray
    exact: list[bool]
    refused: list[str | None]
    score: np.ndarray
    """The verifier's score (NaN where it was not asked: refused by the rules, or no verifier)."""


def judge(pairs: Sequence[Pair], verifier: bool = True) -> Judged:
    from gateway.cache.embedder import OnnxEmbedder

    embedder = OnnxEmbedder()
    try:
        a = asyncio.run(embedder.embed([p.a for p in pairs]))
        b = asyncio.run(embedder.embed([p.b for p in pairs]))
    finally:
        embedder.close()
    exact = [normal_text(p.a) == normal_text(p.b) for p in pairs]
    score = np.full(len(pairs), np.nan, dtype=np.float32)
    if not verifier:
        return Judged((a * b).sum(axis=1), exact, [refuse(p.a, p.b) for p in pairs], score)
    from gateway.cache.verifier import CrossEncoder

    model = CrossEncoder()
    try:
        refused = [refuse(p.a, p.b, model.unseen) for p in pairs]
        asked = [i for i, r in enumerate(refused) if r is None]
        score[asked] = model.score_pairs([(pairs[i].b, pairs[i].a) for i in asked])
    finally:
        model.close()
    return Judged((a * b).sum(axis=1), exact, refused, score)


def predicted(judged: Judged, floor: float, threshold: float | None) -> list[bool]:
    """Hits: joined by the exact layer, or at or above the cosine `floor`, not refused by the
    rules and (with a verifier: `threshold` not None) scored at or above `threshold`."""
    return [
        e or (bool(c >= floor) and r is None and (threshold is None or bool(s >= threshold)))
        for e, c, r, s in zip(judged.exact, judged.cosine, judged.refused, judged.score, strict=True)
    ]


def figures(
    pairs: Sequence[Pair], judged: Judged, floor: float, threshold: float | None, target: float | None = None
) -> dict[str, object]:
    """The figures at the operating point, as `--json` prints them."""
    from gateway.cache.verifier import wilson

    at = predicted(judged, floor, threshold)
    s = score(pairs, at)
    negatives = sum(not p.same for p in pairs)
    false = sum(h and not p.same for p, h in zip(pairs, at, strict=True))
    langs = by_kind(pairs, at, "lang")
    for lang in langs:
        langs[lang]["unreadable"] = sum(
            (p.lang or "en") == lang and r == "unreadable" for p, r in zip(pairs, judged.refused, strict=True)
        )
    return {
        "pairs": len(pairs),
        "floor": floor,
        "threshold": None if threshold is None else round(threshold, 6),
        "target_false_hit_rate": target,
        "precision": round(s.precision, 4),
        "recall": round(s.recall, 4),
        "false_hit_rate": round(s.false_hit_rate, 4),
        "false_hit_interval": [round(x, 4) for x in wilson(false, negatives)],
        "hit_rate": round(s.hit_rate, 4),
        "by_kind": by_kind(pairs, at),
        "by_lang": langs,
    }


def report(
    pairs: Sequence[Pair], judged: Judged, floor: float, threshold: float | None, point: OperatingPoint | None = None
) -> str:
    from gateway.cache.verifier import wilson

    at = predicted(judged, floor, threshold)
    s = score(pairs, at)
    # From the counts, not from `figures`' four-digit roundings (rounded twice, 0.93846 would print as 0.939).
    lo, hi = wilson(sum(h and not p.same for p, h in zip(pairs, at, strict=True)), sum(not p.same for p in pairs))
    lines = [f"{len(pairs)} pairs: {sum(p.same for p in pairs)} same, {sum(not p.same for p in pairs)} different", ""]
    if point is not None:
        p = point
        lines += [
            f"operating point: verifier threshold {p.threshold:.4f} for a target false-hit rate of {p.target:g}"
            f" at cosine floor {floor:g};",
            f"  on the shipped calibration pairs: false-hit rate {p.false_hit_rate:.4f}"
            f" (95% interval {p.lower:.4f}-{p.upper:.4f}, {p.negatives} negatives), recall {p.recall:.3f}",
            "",
        ]
    mode = "with the verifier" if threshold is not None else "cosine and rules only"
    lines += [
        f"on this file, {mode}:",
        "precision | recall | false-hit rate | hit rate",
        f"{s.precision:.3f} | {s.recall:.3f} | {s.false_hit_rate:.3f} (95% interval {lo:.3f}-{hi:.3f}) | {s.hit_rate:.3f}",
        "",
    ]
    if threshold is not None:
        lines.append("verifier threshold | precision | recall | false-hit rate | hit rate")
        for t in sorted({0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, round(threshold, 4)}):
            lines.append(f"{t:.4f} | {score(pairs, predicted(judged, floor, t)).row()}")
        lines.append("")
    lines.append("cosine only (no rules, no verifier): threshold | precision | recall | false-hit rate | hit rate")
    for t in (0.70, 0.75, 0.80, 0.85, 0.90, 0.95):
        lines.append(
            f"{t:.2f} | {score(pairs, [e or bool(c >= t) for e, c in zip(judged.exact, judged.cosine, strict=True)]).row()}"
        )
    fig = figures(pairs, judged, floor, threshold)
    kinds = fig["by_kind"]
    assert isinstance(kinds, dict)
    found = {k: r for k, r in kinds.items() if "recall" in r and "false_hit_rate" not in r}
    false = {k: r for k, r in kinds.items() if "false_hit_rate" in r}
    if found:
        lines += ["", "duplicates found by kind:"]
        lines += [f"  {kind}: {r['hits']} of {r['pairs']}" for kind, r in found.items()]
    lines += ["", "false hits by kind of negative:"]
    lines += [f"  {kind}: {r['hits']} of {r['pairs']}" for kind, r in false.items()]
    lines += ["", "by language: pairs | precision | recall | false-hit rate | unreadable (exact hits only)"]
    langs = fig["by_lang"]
    assert isinstance(langs, dict)
    for lang, r in langs.items():
        lines.append(
            f"  {lang}: {r['pairs']} | {r.get('precision', '-')} | {r.get('recall', '-')}"
            f" | {r.get('false_hit_rate', '-')} | {r['unreadable']}"
        )
    return "\n".join(lines)


def run(
    path: Path, floor: float, target: float, sources: Sequence[str] = (), as_json: bool = False, verifier: bool = True
) -> str:
    from gateway.cache.verifier import Calibration, threshold_for

    pairs = read_pairs(path, sources)
    judged = judge(pairs, verifier)
    point = threshold_for(Calibration.load(), target, floor) if verifier else None
    threshold = point.threshold if point is not None else None
    if as_json:
        return msgspec.json.encode(figures(pairs, judged, floor, threshold, target if verifier else None)).decode()
    return report(pairs, judged, floor, threshold, point)
