"""The ONNX embedder against sentence-transformers' own model, and its micro-batching."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.cache.embedder import OnnxEmbedder, bundled_model_dir, length_groups
from gateway.settings import EmbedderSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = [
    "How do I reset my password?",
    "What's the capital of France?",
    "Translate 'good morning' into Spanish, formally.",
    "Book a flight from Paris to Berlin on May 3rd.",
    "Book a flight from Berlin to Paris on May 3rd.",
    "I do not want to cancel my subscription.",
    "Write a haiku about autumn leaves.",
    "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "Résumé: naïve café owners in Zürich — 3 × 4 = 12?",  # noqa: RUF001
    "日本語の文章も埋め込めますか？",  # noqa: RUF001
    "",
    "a " * 600,  # longer than the model's 256 tokens: truncated the same way
]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnnxEmbedder]:
    e = OnnxEmbedder(EmbedderSettings(onnx_dir=str(tmp_path_factory.mktemp("onnx")), max_batch=8))
    yield e
    e.close()


def test_vectors_match_sentence_transformers(embedder: OnnxEmbedder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(bundled_model_dir()), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    ours = embedder.embed_now(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384) == reference.shape
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() >= 0.999, cosines


def test_concurrent_requests_are_batched_and_each_gets_its_own_vectors(embedder: OnnxEmbedder) -> None:
    alone = embedder.embed_now(SENTENCES)
    batches = embedder.batches

    async def together() -> list[np.ndarray]:
        return await asyncio.gather(*(embedder.embed([s]) for s in SENTENCES * 3))

    vectors = asyncio.run(together())
    assert embedder.batches - batches == 5  # 36 requests at once, at most 8 texts a run (max_batch)
    for i, v in enumerate(vectors):
        assert v.shape == (1, 384)
        assert float(v[0] @ alone[i % len(SENTENCES)]) >= 0.9999


def test_the_onnx_file_is_exported_once_and_reused(embedder: OnnxEmbedder) -> None:
    path = Path(embedder.model_path)
    stamp = path.stat().st_mtime_ns
    again = OnnxEmbedder(EmbedderSettings(onnx_dir=str(path.parent)))
    assert again.model_path == path and path.stat().st_mtime_ns == stamp
    assert [p.suffix for p in path.parent.iterdir()] == [".onnx"]  # no temporary files left behind
    again.close()


def test_each_layers_attention_is_one_fused_node(embedder: OnnxEmbedder) -> None:
    """The export's speed rests on ONNX Runtime's BERT fusions recognising the traced graph; a
    transformers release that traces attention differently would silently leave it unfused."""
    import onnx

    ops = Counter(node.op_type for node in onnx.load(str(embedder.model_path)).graph.node)
    assert ops["Attention"] == 6 and ops["EmbedLayerNormalization"] == 1, ops
    assert ops["Softmax"] == 0 and ops["Transpose"] == 0  # nothing of the unfused attention is left


def test_an_export_whose_fusion_fails_still_serves_the_same_vectors(
    embedder: OnnxEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxruntime.transformers import optimizer

    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("pattern not supported")

    monkeypatch.setattr(optimizer, "optimize_model", refuse)
    with pytest.warns(UserWarning, match="fusions failed"):
        unfused = OnnxEmbedder(EmbedderSettings(onnx_dir=str(tmp_path)))
    try:
        assert float((unfused.embed_now(SENTENCES) * embedder.embed_now(SENTENCES)).sum(axis=1).min()) >= 0.9999
    finally:
        unfused.close()


def test_texts_of_like_length_run_together_and_a_long_one_runs_apart() -> None:
    assert length_groups([]) == []
    assert length_groups([17, 16, 21, 19, 16, 20]) == [[1, 4, 0, 3, 5, 2]]  # shortest first, one padded batch
    groups = length_groups([12, 159, 14, 13, 15, 60, 12])
    assert sorted(i for g in groups for i in g) == list(range(7))  # every text once
    assert [1] in groups and [5] in groups  # the long ones are not padded onto the short ones, nor each other
    lengths = [3, 5, 8, 13, 21, 34, 55, 89, 144, 233]
    for group in length_groups(lengths):
        longest = max(lengths[i] for i in group)
        assert longest * len(group) <= 1.25 * sum(lengths[i] for i in group)


def test_a_batch_of_mixed_lengths_gives_each_text_its_own_vector(embedder: OnnxEmbedder) -> None:
    texts = ["a " * 150, "hi", "How do I reset my password?", "", "a " * 40]
    together = embedder.embed_now(texts)
    for text, vector in zip(texts, together, strict=True):
        assert float(vector @ embedder.embed_now([text])[0]) >= 0.9999
