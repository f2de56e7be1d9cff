"""Semantic cache speed: lookup latency with 10,000 entries, the index at scale, and a hit
against a slow upstream.

1. In process: 10,000 entries in one namespace (random unit vectors: the search cost does not
   depend on what they mean) plus the real answers for the query set; each lookup embeds the query
   with the ONNX embedder (through its micro-batching queue), tries the exact key, searches FAISS,
   reads the candidates above the floor from the store, runs the rules and scores them with the
   verifier (the shipped int8 export, one run per candidate) at the shipped operating point. p50 /
   p99 over the rounds, once with the memory store and once with Redis (a private redis-server on
   loopback), and once more with the float32 export of the same verifier (all candidates in one
   run); and
   lookups of questions near no entry (no candidate above the floor: the verifier is not run).
2. The index alone with `--scale` vectors in one namespace: the exact flat scan against the IVF
   index the cache switches to past `ivf_from`; queries are stored vectors moved to cosine ~0.9
   (a paraphrase's distance); recall is how often IVF's best is the flat scan's best.
3. Through a running gateway (cache on) in front of a fake upstream that takes 500 ms: the miss,
   then hits of the same request, timed at the client.

    python -m loadtest.bench_cache
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from gateway.cache.embedder import OnnxEmbedder
from gateway.cache.index import VectorIndex
from gateway.cache.redis_store import RedisStore
from gateway.cache.semantic import SemanticCache
from gateway.cache.store import Entry, MemoryStore, Store
from gateway.cache.verifier import Calibration, CrossEncoder, threshold_for
from gateway.settings import CacheSettings
from loadtest.report import footer
from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the capital of France?", "What's the capital city of France?"),
    ("Explain photosynthesis simply.", "Can you explain photosynthesis in simple terms?"),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    ("How do I center a div in CSS?", "How can I center a div with CSS?"),
    ("What causes rain?", "Why does it rain?"),
]


FAR = ["Tell me a joke about penguins.", "List three prime numbers greater than 100.", "Recommend a board game for four players."]
"""Questions near no stored entry: lookups with no candidate above the floor."""


async def lookups(
    embedder: OnnxEmbedder, verifier: CrossEncoder, store: Store, entries: int, rounds: int
) -> tuple[list[float], list[float]]:
    settings = CacheSettings()
    floor = settings.threshold
    threshold = threshold_for(Calibration.load(), settings.target_false_hit_rate, floor).threshold
    cache = SemanticCache(store, VectorIndex(embedder.dim), verifier=verifier)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((entries, embedder.dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    for i, vector in enumerate(noise):
        await cache.store_entry(Entry(f"k{i}", "ns", f"filler {i}", b"{}", time.time() + 3600, vector.tobytes()))
    for stored, _ in QUERIES:
        vector = embedder.embed_now([stored])[0]
        await cache.store_entry(Entry(stored, "ns", stored, b"{}", time.time() + 3600, vector.tobytes()))
    for text, paraphrase in QUERIES * 5:  # warm up: the first ONNX Runtime calls are slow
        await embedder.embed([text])
        await verifier.verify(text, [paraphrase])

    async def timed(texts: list[str]) -> tuple[list[float], int]:
        times, hits = [], 0
        for text in texts:
            start = time.perf_counter()
            if await cache.lookup_exact(text) is None:
                vector = (await embedder.embed([text]))[0]
                hits += await cache.lookup_semantic("ns", text, vector, floor, 4, threshold) is not None
            times.append(time.perf_counter() - start)
        return times, hits

    runs = verifier.runs
    times, _ = await timed([QUERIES[r % len(QUERIES)][1] for r in range(rounds)])  # paraphrases: never exact
    assert verifier.runs - runs == rounds, "a paraphrase lookup had no candidate to verify"  # each paid for the model
    runs = verifier.runs
    far, far_hits = await timed([FAR[r % len(FAR)] for r in range(rounds)])
    assert far_hits == 0 and verifier.runs == runs, "a lookup with no candidate ran the verifier"
    await store.aclose()
    return times, far


async def both_stores(entries: int, rounds: int) -> tuple[list[float], list[float], list[float], list[float]]:
    embedder = OnnxEmbedder()
    verifier = CrossEncoder()
    memory, far = await lookups(embedder, verifier, MemoryStore(entries + 100), entries, rounds)
    unquantized = CrossEncoder(quantized=False)
    fp32, _ = await lookups(embedder, unquantized, MemoryStore(entries + 100), entries, rounds)
    unquantized.close()
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir))
        try:
            redis, _ = await lookups(embedder, verifier, RedisStore(server.url, max_entries=entries + 100), entries, rounds)
        finally:
            server.stop()
    embedder.close()
    verifier.close()
    return memory, redis, far, fp32


def index_scale(size: int, queries: int, dim: int = 384) -> tuple[list[float], list[float], float]:
    """Search times of the flat and the IVF index over the same `size` vectors, and IVF's recall@1."""
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((size, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    flat, ivf = VectorIndex(dim, ivf_from=size + 1), VectorIndex(dim, ivf_from=size)
    for i, v in enumerate(vectors):
        flat.add("ns", i, v)
        ivf.add("ns", i, v)
    ivf.wait_built()
    assert flat.kind("ns") == "flat" and ivf.kind("ns") == "ivf"
    picks = rng.choice(size, queries, replace=False)
    noise = rng.standard_normal((queries, dim)).astype(np.float32)
    noise -= (noise * vectors[picks]).sum(axis=1, keepdims=True) * vectors[picks]  # orthogonal to the stored vector
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    probes = 0.9 * vectors[picks] + np.sqrt(1 - 0.9**2) * noise  # cosine 0.9 to the stored one
    times: dict[str, list[float]] = {"flat": [], "ivf": []}
    agree = 0
    for probe in probes:
        best = {}
        for name, index in (("flat", flat), ("ivf", ivf)):
            start = time.perf_counter()
            found = index.search("ns", probe, 4)
            times[name].append(time.perf_counter() - start)
            best[name] = found[0].entry_id if found else -1
        agree += best["flat"] == best["ivf"]
    return times["flat"], times["ivf"], agree / queries


def through_gateway(requests: int) -> tuple[float, list[float]]:
    upstream = FakeUpstream(Behavior(latency_s=0.5), name="slow").start_in_thread()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("reload: {watch: false}\nauth: {enabled: false}\ncache: {enabled: true}\npools:\n  m:\n")
        f.write(f'    deployments: [{{id: slow, base_url: "{upstream.base_url}"}}]\n')
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", f.name, "--port", str(port), "--log-level", "error"]
    cmd += ["--admin-port", "0"]  # the admin listener on a free port
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/health/readiness", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        body = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "What is the speed of light?"}]}
        with httpx.Client(base_url=url, timeout=30) as client:
            start = time.perf_counter()
            assert client.post("/v1/chat/completions", json=body).headers["x-gateway-cache"] == "miss"
            miss = time.perf_counter() - start
            hits = []
            for _ in range(requests):
                start = time.perf_counter()
                response = client.post("/v1/chat/completions", json=body)
                hits.append(time.perf_counter() - start)
                assert response.headers["x-gateway-cache"] == "hit-exact"
        return miss, hits
    finally:
        proc.send_signal(signal.SIGINT)  # SIGTERM would wait out server.drain_delay_s
        proc.wait(10)
        upstream.stop()
        os.unlink(f.name)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--scale", type=int, default=200_000, help="vectors in one namespace for the flat vs IVF rows")
    args = parser.parse_args()
    memory, redis, far, fp32 = asyncio.run(both_stores(args.entries, args.rounds))
    flat, ivf, recall = index_scale(args.scale, 500)
    miss, hits = through_gateway(200)
    hit50 = statistics.median(hits)
    lookup = f"semantic lookup, {args.entries:,} entries, embedding included ({args.rounds} queries)"
    rows = [
        (f"{lookup}, memory store", pct(memory, 50), pct(memory, 99)),
        (f"{lookup}, Redis store", pct(redis, 50), pct(redis, 99)),
        (f"{lookup}, memory store, float32 verifier (not the shipped int8)", pct(fp32, 50), pct(fp32, 99)),
        (
            f"lookup with no candidate above the floor, {args.entries:,} entries, memory store (verifier not run)",
            pct(far, 50),
            pct(far, 99),
        ),
        (f"index search only, {args.scale:,} vectors, flat (500 queries)", pct(flat, 50), pct(flat, 99)),
        (f"index search only, {args.scale:,} vectors, IVF nprobe 16 (recall@1 {recall:.3f})", pct(ivf, 50), pct(ivf, 99)),
        ("hit through the gateway (200 requests, httpx client)", hit50, pct(hits, 99)),
    ]
    lines = ["| measurement | p50 ms | p99 ms |", "|---|---|---|"]
    lines += [f"| {name} | {p50 * 1e3:.2f} | {p99 * 1e3:.2f} |" for name, p50, p99 in rows]
    lines += [
        f"| the miss before them (upstream takes 500 ms) | {miss * 1e3:.1f} | |",
        "",
        f"hit vs miss: {miss / hit50:,.0f}x faster at p50",
        "",
        *footer("loadtest.bench_cache"),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
