"""Semantic cache speed: lookup latency with 10,000 entries, and a hit against a slow upstream.

1. In process: 10,000 entries in one namespace (random unit vectors: the search cost does not
   depend on what they mean) plus the real answers for the query set; each lookup embeds the query
   with the ONNX embedder (through its micro-batching queue), tries the exact key, searches FAISS
   and runs the veto on the candidates. p50 / p99 over the rounds.
2. Through a running gateway (cache on) in front of a fake upstream that takes 500 ms: the miss,
   then hits of the same request, timed at the client.

    python -m loadtest.bench_cache
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
from gateway.cache.semantic import SemanticCache
from gateway.cache.store import Entry, MemoryStore
from loadtest.fake_upstream import Behavior, FakeUpstream
from loadtest.report import footer

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the capital of France?", "What's the capital city of France?"),
    ("Explain photosynthesis simply.", "Can you explain photosynthesis in simple terms?"),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    ("How do I center a div in CSS?", "How can I center a div with CSS?"),
    ("What causes rain?", "Why does it rain?"),
]


async def lookups(entries: int, rounds: int) -> list[float]:
    embedder = OnnxEmbedder()
    cache = SemanticCache(MemoryStore(entries + 100), VectorIndex(embedder.dim), threshold=0.85)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((entries, embedder.dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    for i, vector in enumerate(noise):
        cache.store_entry(Entry(f"k{i}", "ns", f"filler {i}", b"{}", time.time() + 3600), vector)
    for stored, _ in QUERIES:
        cache.store_entry(Entry(stored, "ns", stored, b"{}", time.time() + 3600), embedder.embed_now([stored])[0])
    times, hits = [], 0
    for r in range(rounds):
        text = QUERIES[r % len(QUERIES)][1] + ("" if r < len(QUERIES) else f" ({r})")
        start = time.perf_counter()
        if cache.lookup_exact(text) is None:
            vector = (await embedder.embed([text]))[0]
            hits += cache.lookup_semantic("ns", text, vector) is not None
        times.append(time.perf_counter() - start)
    embedder.close()
    return times


def through_gateway(requests: int) -> tuple[float, list[float]]:
    upstream = FakeUpstream(Behavior(latency_s=0.5), name="slow").start_in_thread()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("reload: {watch: false}\ncache: {enabled: true}\npools:\n  m:\n")
        f.write(f'    deployments: [{{id: slow, base_url: "{upstream.base_url}"}}]\n')
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", f.name, "--port", str(port), "--log-level", "error"]
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
        proc.terminate()
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
    args = parser.parse_args()
    times = asyncio.run(lookups(args.entries, args.rounds))
    miss, hits = through_gateway(200)
    hit50 = statistics.median(hits)
    rows = [
        (
            f"semantic lookup, {args.entries:,} entries, embedding included ({args.rounds} queries)",
            pct(times, 50),
            pct(times, 99),
        ),
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
