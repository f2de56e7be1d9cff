"""The two cache layers with the real embedder, the shipped verifier, a real FAISS index and the memory store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.cache.embedder import OnnxEmbedder
from gateway.cache.index import VectorIndex
from gateway.cache.keys import context_digest
from gateway.cache.semantic import SemanticCache
from gateway.cache.store import Entry, MemoryStore
from gateway.cache.verifier import Calibration, CrossEncoder, threshold_for
from gateway.settings import CacheSettings, EmbedderSettings
from gateway.text import semantic_text


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def embedder() -> Iterator[OnnxEmbedder]:
    e = OnnxEmbedder(EmbedderSettings())  # the export in the user's cache folder, made once per machine
    yield e
    e.close()


@pytest.fixture(scope="module")
def verifier() -> Iterator[CrossEncoder]:
    v = CrossEncoder()
    yield v
    v.close()


DEFAULTS = CacheSettings()
THRESHOLD = threshold_for(Calibration.load(), DEFAULTS.target_false_hit_rate, DEFAULTS.threshold).threshold


def cache_with(
    embedder: OnnxEmbedder, clock: Clock, max_entries: int = 100, verifier: CrossEncoder | None = None
) -> SemanticCache:
    return SemanticCache(MemoryStore(max_entries, clock), VectorIndex(embedder.dim), verifier=verifier, clock=clock)


async def put(cache: SemanticCache, embedder: OnnxEmbedder, clock: Clock, text: str, ns: str = "small", ttl: float = 60) -> Entry:
    vector = embedder.embed_now([text])[0].tobytes()
    entry = Entry(f"key:{ns}:{text}", ns, text, text.encode(), clock.now + ttl, vector)
    await cache.store_entry(entry)
    return entry


async def find(cache: SemanticCache, embedder: OnnxEmbedder, text: str, ns: str = "small") -> bytes | None:
    vector = embedder.embed_now([text])[0]
    hit = await cache.lookup_semantic(ns, text, vector, DEFAULTS.threshold, DEFAULTS.top_k, THRESHOLD)
    return None if hit is None else hit.entry.body


async def test_the_verifier_lets_duplicates_through_and_rejects_a_swapped_direction(
    embedder: OnnxEmbedder, verifier: CrossEncoder
) -> None:
    clock = Clock()
    cache = cache_with(embedder, clock, verifier=verifier)
    await put(cache, embedder, clock, "Book a flight from Paris to Berlin on Friday.")
    await put(cache, embedder, clock, "How do I reset my password?")
    await put(cache, embedder, clock, "What is the boiling point of water at sea level?")
    assert await find(cache, embedder, "how do i reset my pasword") == b"How do I reset my password?"  # a typo
    assert await find(cache, embedder, "What's the boiling point of water at sea level?") is not None  # a rewording
    assert await find(cache, embedder, "Book a flight from Berlin to Paris on Friday.") is None
    assert cache.rejected >= 1


def test_the_verdict_does_not_depend_on_which_side_was_cached(verifier: CrossEncoder) -> None:
    """A pair is read both ways round: asking b of a cache holding a scores as asking a of one holding b."""
    pairs = [
        ("Book a flight from Paris to Berlin on Friday.", "Book a flight from Berlin to Paris on Friday."),
        ("how do i reset my pasword", "How do I reset my password?"),
        ("Which glazes are food safe?", "Which glazes are not food safe?"),
    ]
    for a, b in pairs:
        assert verifier.scores(a, [b])[0] == pytest.approx(verifier.scores(b, [a])[0], abs=1e-4)


async def test_a_miss_with_no_candidate_never_runs_the_verifier(embedder: OnnxEmbedder, verifier: CrossEncoder) -> None:
    clock = Clock()
    cache = cache_with(embedder, clock, verifier=verifier)
    await put(cache, embedder, clock, "How do I reset my password?")
    runs = verifier.runs
    assert await find(cache, embedder, "Write a haiku about autumn rain.") is None
    assert verifier.runs == runs
    assert await find(cache, embedder, "How do I reset my PIN?") is None  # a candidate, scored below the threshold
    assert verifier.runs == runs + 1  # one lookup scored


async def test_the_rules_refuse_before_the_verifier_is_asked(embedder: OnnxEmbedder, verifier: CrossEncoder) -> None:
    clock = Clock()
    cache = cache_with(embedder, clock, verifier=verifier)
    await put(cache, embedder, clock, "How many calories do I burn cycling for 30 minutes?")
    runs = verifier.runs
    assert await find(cache, embedder, "How many calories do I burn cycling for 90 minutes?") is None  # cosine 0.74
    assert (cache.refused, verifier.runs) == (1, runs)


async def test_feedback_raises_a_namespace_past_the_wrong_hit(embedder: OnnxEmbedder, verifier: CrossEncoder) -> None:
    clock = Clock()
    cache = cache_with(embedder, clock, verifier=verifier)
    await put(cache, embedder, clock, "What is the boiling point of water at sea level?")
    text = "What's the boiling point of water at sea level?"
    hit = await cache.lookup_semantic("small", text, embedder.embed_now([text])[0], DEFAULTS.threshold, 4, THRESHOLD)
    assert hit is not None and hit.score is not None and hit.score < 1
    assert await cache.tighten("small", hit.score) > hit.score
    assert await find(cache, embedder, text) is None  # that kind of hit, in that namespace, no more
    await put(cache, embedder, clock, "What is the boiling point of water at sea level?", ns="large")
    assert await find(cache, embedder, text, ns="large") is not None  # other namespaces keep their threshold
    await put(cache, embedder, clock, "How do I reset my password?")
    typo = "how do i reset my pasword"  # one text once respelt: scored 1 without the model
    found = await cache.lookup_semantic("small", typo, embedder.embed_now([typo])[0], DEFAULTS.threshold, 4, THRESHOLD)
    assert found is not None and found.score == 1.0
    assert await cache.tighten("small", 1.0) > 1  # even that can be stopped
    assert await find(cache, embedder, typo) is None


async def test_namespaces_never_meet(embedder: OnnxEmbedder) -> None:
    clock = Clock()
    cache = cache_with(embedder, clock)
    await put(cache, embedder, clock, "How do I reset my password?", ns="small")
    assert await find(cache, embedder, "How do I reset my password?", ns="large") is None


async def test_entries_expire_without_sliding_and_leave_the_index(embedder: OnnxEmbedder) -> None:
    clock = Clock()
    cache = cache_with(embedder, clock)
    entry = await put(cache, embedder, clock, "What is the boiling point of water?", ttl=10)
    clock.now += 9
    assert await cache.lookup_exact(entry.key) is not None  # a hit does not extend the TTL...
    clock.now += 1.5
    assert await cache.lookup_exact(entry.key) is None  # ...so it ends 10 s after it was stored
    assert await find(cache, embedder, "What is the boiling point of water?") is None
    assert cache.index.size() == 0


async def test_the_least_recently_used_entry_makes_room(embedder: OnnxEmbedder) -> None:
    clock = Clock()
    cache = cache_with(embedder, clock, max_entries=2)
    first = await put(cache, embedder, clock, "Name a primary colour.")
    second = await put(cache, embedder, clock, "What is the tallest mountain?")
    assert await cache.lookup_exact(first.key) is not None  # first is now the more recently used
    await put(cache, embedder, clock, "Who painted the Mona Lisa?")
    assert await cache.lookup_exact(second.key) is None and await cache.lookup_exact(first.key) is not None
    assert cache.index.size() == 2


def test_what_is_embedded_and_what_is_not() -> None:
    convo = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hi there  "}]}
    assert semantic_text("chat/completions", convo) == "Hi there"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "image_url"}]}]}
    assert semantic_text("chat/completions", parts) == "Describe"
    tool_turn = {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "42", "tool_call_id": "1"}]}
    assert semantic_text("chat/completions", tool_turn) is None
    assert semantic_text("chat/completions", {"messages": [{"role": "user", "content": "   "}]}) is None
    assert semantic_text("completions", {"prompt": "Once upon a time"}) == "Once upon a time"
    assert semantic_text("embeddings", {"input": "x"}) is None
    follow_up = {
        "messages": [
            {"role": "user", "content": "GDP of Italy?"},
            {"role": "assistant", "content": "..."},
            {"role": "user", "content": "And in 2023?"},
        ]
    }
    other_thread = {
        "messages": [
            {"role": "user", "content": "GDP of Spain?"},
            {"role": "assistant", "content": "..."},
            {"role": "user", "content": "And in 2023?"},
        ]
    }
    assert context_digest(follow_up) != context_digest(other_thread)
    assert context_digest(convo) == ""  # a system prompt alone is not context (it has its own place in the key)


def test_a_large_namespace_moves_to_ivf_and_keeps_every_change() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    builder, busy = ThreadPoolExecutor(1), threading.Event()
    builder.submit(busy.wait)  # holds the build back until the changes below are made
    index = VectorIndex(16, ivf_from=200, nprobe=64, builder=builder)  # nprobe past the cell count: exact here
    for i in range(200):
        index.add("big", i, vectors[i])
    # The build runs in the background; changes made meanwhile must reach the new index.
    for i in range(200, 300):
        index.add("big", i, vectors[i])
    index.remove(7)
    assert index.kind("big") == "flat" and index.size("big") == 299  # the flat index answers meanwhile
    busy.set()
    index.wait_built()
    assert index.kind("big") == "ivf" and index.size("big") == 299
    assert index.search("big", vectors[250], 1)[0].entry_id == 250  # added during the build
    assert all(c.entry_id != 7 for c in index.search("big", vectors[7], 5))  # removed during the build
    index.add("small", 1, vectors[0])
    assert index.kind("small") == "flat"


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Wie kehre ich eine Liste in Python um?", "wie kehre ich eine lsite in python um"),
        ("Comment inverser une liste en Python ?", "comment inverser une litse en python"),
        ("¿Cómo invierto una lista en Python?", "como invierto una lsita en python"),
    ],
)
async def test_a_typo_hits_in_german_french_and_spanish(
    embedder: OnnxEmbedder, verifier: CrossEncoder, stored: str, asked: str
) -> None:
    clock = Clock()
    cache = cache_with(embedder, clock, verifier=verifier)
    await put(cache, embedder, clock, stored)
    assert await find(cache, embedder, asked) == stored.encode()


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("怎么给多肉植物浇水", "多肉植物怎么浇水"),  # Chinese: the model reads almost none of it
        ("猫は一日何時間寝ますか", "猫は一日に何時間眠りますか"),  # Japanese that differs in kanji it cannot read
    ],
)
async def test_text_the_verifier_cannot_read_gets_no_semantic_hit(
    embedder: OnnxEmbedder, verifier: CrossEncoder, stored: str, asked: str
) -> None:
    clock = Clock()
    cache = cache_with(embedder, clock, verifier=verifier)
    await put(cache, embedder, clock, stored)
    assert await find(cache, embedder, asked) is None
    assert cache.refused == 1 or cache.index.search("small", embedder.embed_now([asked])[0], 1)[0].similarity < DEFAULTS.threshold
    assert await cache.lookup_exact(f"key:small:{stored}") is not None  # the exact layer still serves a repeat
