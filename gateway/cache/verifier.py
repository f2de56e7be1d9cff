"""The pair verifier: does the answer cached for one prompt serve another?

The semantic layer finds candidates by cosine (fast, but blind to "from Paris to Berlin" against
"from Berlin to Paris", or "safe" against "not safe"), then asks a `Verifier` about each candidate
at or above its floor. The shipped one is a cross-encoder fine-tuned from the bundled
all-MiniLM-L6-v2 (gateway/offline/verifier_training.py): both prompts go through the model
together, so each word of one is read against the other. It runs on ONNX Runtime like the
embedder; the file is exported on first use from the bundled weights with the shipped low-rank
updates and head merged in (`config/cache/verifier.safetensors`), quantized to int8, and cached
on disk under a name made of both hashes.

Its threshold is not set by hand: `threshold_for` picks it from the calibration scores shipped
beside the weights (`config/cache/verifier.json`) for a target false-hit rate.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from gateway.cache.embedder import bundled_model_dir, default_onnx_dir
from gateway.cache.keys import normal_text
from gateway.offline.onnx_export import model_hash

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "cache"
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)?")
MAX_TOKENS = 128
_EXPORT_VERSION = "2"


class Verifier(Protocol):
    def scores(self, query: str, candidates: Sequence[str]) -> np.ndarray:
        """For each candidate, how likely the answer cached for it serves `query` (0 to 1). Blocking."""
        ...

    async def verify(self, query: str, candidates: Sequence[str]) -> np.ndarray:
        """`scores`, off the event loop."""
        ...

    def unseen(self, text: str) -> list[str]:
        """The parts of `text` the verifier cannot read (see rules.py), in order."""
        ...

    def close(self) -> None: ...


class CrossEncoder:
    def __init__(
        self, weights: Path | None = None, onnx_dir: Path | None = None, threads: int = 0, *, quantized: bool = True
    ) -> None:
        """`quantized=False` runs the float32 export, which the shipped calibration scores are not
        for: benchmarks compare the two with it."""
        model_dir = bundled_model_dir()
        weights = weights or SHIPPED / "verifier.safetensors"
        self.model_path = ensure_verifier_onnx(model_dir, weights, onnx_dir or default_onnx_dir(), quantized=quantized)
        # Each pair is read both ways round and the two logits averaged: the model was trained on
        # pairs in either order, and the mean separates duplicates from hard negatives better than
        # either reading. Dynamic int8 quantizes each call's activations with one scale for the
        # whole batch, so a pair's score would depend on the pairs beside it (by up to 0.16 in a
        # batch of 64): under int8 a call holds one pair's two readings only, at run time as in
        # calibration and evaluation.
        self._batch = 2 if quantized else 64
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._single = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._single.no_padding()
        self._single.no_truncation()
        self._unk = self._single.token_to_id("[UNK]")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        # The CPU's int8 kernels, where the calibration scores were made, whatever the embedder runs on.
        self._session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="verifier")
        self.runs = 0
        """Lookups (or `score_pairs` calls) that ran the model so far."""

    def scores(self, query: str, candidates: Sequence[str]) -> np.ndarray:
        if not candidates:
            return np.empty(0, dtype=np.float32)
        return self.score_pairs([(query, c) for c in candidates])

    def known(self, word: str) -> bool:
        """Whether the vocabulary has `word` whole (a word it must split may be misspelt)."""
        return self._single.token_to_id(word.lower()) is not None

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The score of each (query, candidate), read both ways round, each side's misspellings of
        the other's words respelt first (`respell`). A pair that is then one text in the exact
        layer's normal form (case, spacing, trailing punctuation) scores 1 without a model call."""
        out = np.ones(len(pairs), dtype=np.float32)
        pairs = [aligned(q, c, self.known) for q, c in pairs]
        # Respelt, the two may be one text as the exact layer sees it: the same question, by construction.
        asked = [i for i, (q, c) in enumerate(pairs) if normal_text(q) != normal_text(c)]
        pairs = [pairs[i] for i in asked]
        both = [order for q, c in pairs for order in ((q, c), (c, q))]
        scores = np.empty(len(both), dtype=np.float32)
        for start in range(0, len(both), self._batch):
            encodings = self._tokenizer.encode_batch(both[start : start + self._batch])
            ids, mask, types = padded(encodings)
            scores[start : start + len(encodings)] = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )[0]
        self.runs += bool(pairs)
        out[asked] = _mean_logit(scores[0::2], scores[1::2])
        return out

    async def verify(self, query: str, candidates: Sequence[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.scores, query, candidates)

    def unseen(self, text: str) -> list[str]:
        e = self._single.encode(text, add_special_tokens=False)
        return [text[s:t] for i, (s, t) in zip(e.ids, e.offsets, strict=True) if i == self._unk]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _mean_logit(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The probability whose logit is the mean of the logits of `p` and `q` (whose odds are the
    geometric mean of their odds)."""
    p64 = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    q64 = np.clip(q.astype(np.float64), 1e-7, 1 - 1e-7)
    odds = np.sqrt(p64 * q64 / ((1 - p64) * (1 - q64)))
    return np.asarray(odds / (1 + odds), dtype=np.float32)


def padded(encodings: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids, attention mask and token types of `encodings`, right-padded to the longest."""
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        n = len(e.ids)
        ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
    return ids, mask, types


def aligned(a: str, b: str, known: Callable[[str], bool]) -> tuple[str, str]:
    """The pair as the model reads it: each side's misspellings of the other's words respelt (`a`
    first, then `b` against the respelt `a`, so a word is never respelt both ways)."""
    a = respell(a, b, known)
    return a, respell(b, a, known)


def respell(query: str, candidate: str, known: Callable[[str], bool]) -> str:
    """`query` with each word that looks like a misspelling of a word of `candidate` written as in
    `candidate`, so that the model reads a typo as the word it stands for ("faucit" / "faucet").

    A word is respelt when it is not in `candidate`, is in an alphabetic script (Latin, Greek,
    Cyrillic), is not a word the vocabulary knows whole (`known`: "desert" is not a misspelling of
    "dessert"), starts with the same letter as exactly one word of `candidate` that `query` has
    fewer times ("step by setp" / "step by step") and is near it: one edit (a letter added,
    dropped, changed, or two neighbours swapped) for words of five letters or more; two edits for
    words of eight or more whose lengths differ by at most one ("begginer" / "beginner"); for words
    of three or four letters, a letter added or dropped or two neighbours swapped, never one changed
    ("wrok" / "work", "kep" / "keep"); never a letter added at the end unless it doubles the last
    ("tatto" / "tattoo", not "cant" / "can"). Two neighbouring words that together are a word of
    `candidate` are written as that word ("sour dough" / "sourdough"). Anything else is left for
    the model to judge."""
    words = _WORD.findall(candidate)
    theirs = {w.casefold(): w for w in words}
    counted = Counter(w.casefold() for w in words)
    ours = Counter(w.casefold() for w in _WORD.findall(query))
    spare = [w for w in theirs if counted[w] > ours[w]]  # "step by setp" / "step by step": one "step" is spare
    if not spare:
        return query

    untouched = len(query)  # from the right: a word already joined to its right is not joined again
    for left, right in reversed(list(itertools.pairwise(_WORD.finditer(query)))):
        whole = (left.group(0) + right.group(0)).casefold()
        if whole in spare and right.end() <= untouched and query[left.end() : right.start()] == " ":
            query = query[: left.start()] + theirs[whole] + query[right.end() :]
            untouched = left.start()

    def fix(match: re.Match[str]) -> str:
        word = match.group(0)
        folded = word.casefold()
        if folded in theirs or len(folded) < 3 or max(folded) > "\u05ff" or known(folded):
            return word
        near = [w for w in spare if w[0] == folded[0] and _near(folded, w)]
        return theirs[near[0]] if len(near) == 1 else word

    return _WORD.sub(fix, query)


def _near(typo: str, word: str) -> bool:
    """Whether `typo` may be a misspelling of `word` (see `respell` for how near, by length)."""
    longer, shorter = (typo, word) if len(typo) > len(word) else (word, typo)
    if len(longer) == len(shorter) + 1 and longer.startswith(shorter) and longer[-1] != shorter[-1]:
        return False  # a letter more at the end makes another word: "cant" / "can", "wont" / "won"
    if len(typo) < 5:  # no letter changed: "Iran" / "Iraq" may be two places
        return len(word) >= 3 and _distance(typo, word) == 1 and (len(typo) != len(word) or sorted(typo) == sorted(word))
    if len(typo) >= 8 and len(word) >= 8 and abs(len(typo) - len(word)) <= 1:
        return _distance(typo, word) <= 2
    return _distance(typo, word) == 1


def _distance(a: str, b: str) -> int:
    """Edits from `a` to `b`: letters added, dropped or changed, and neighbours swapped (optimal
    string alignment), counted up to 3."""
    if abs(len(a) - len(b)) > 2:
        return 3
    before: list[int] = []
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        before, row = row, current
    return min(row[-1], 3)


@dataclass(frozen=True)
class Calibration:
    """The shipped verifier's scores on the calibration split (pairs no weight was fitted on)."""

    same: np.ndarray
    cosine: np.ndarray
    ruled: np.ndarray
    score: np.ndarray
    kind: list[str]

    @classmethod
    def load(cls, path: Path | None = None) -> Calibration:
        data = json.loads((path or SHIPPED / "verifier.json").read_text())["calibration"]
        return cls(
            np.asarray(data["same"], dtype=bool),
            np.asarray(data["cosine"], dtype=np.float32),
            np.asarray(data["ruled"], dtype=bool),
            np.asarray(data["score"], dtype=np.float32),
            list(data["kind"]),
        )


@dataclass(frozen=True)
class OperatingPoint:
    target: float
    threshold: float
    false_hit_rate: float
    """On the calibration split's negatives, at this threshold (with the floor and the rules)."""
    upper: float
    """Its one-sided 95% upper confidence bound (Wilson)."""
    lower: float
    recall: float
    negatives: int
    positives: int


def threshold_for(calibration: Calibration, target: float, floor: float) -> OperatingPoint:
    """The lowest score threshold at which the calibration false-hit rate's 95% upper bound stays
    within `target`: candidates must also reach the cosine `floor` and pass the rules, as at run time."""
    eligible = (calibration.cosine >= floor) & ~calibration.ruled
    neg_scores = np.sort(calibration.score[eligible & ~calibration.same])[::-1]
    negatives = int((~calibration.same).sum())
    positives = int(calibration.same.sum())
    chosen = 1.0
    for false_hits in range(len(neg_scores) + 1):
        if wilson(false_hits, negatives)[1] > target:
            break
        # allowing `false_hits` negatives through: the threshold sits just above the next one
        chosen = float(np.nextafter(neg_scores[false_hits], np.float32(2))) if false_hits < len(neg_scores) else 0.0
    hits = eligible & (calibration.score >= chosen)
    false = int((hits & ~calibration.same).sum())
    lower, upper = wilson(false, negatives)
    recall = float((hits & calibration.same).sum()) / positives if positives else 0.0
    return OperatingPoint(target, chosen, false / negatives if negatives else 0.0, upper, lower, recall, negatives, positives)


def wilson(k: int, n: int, z: float = 1.645) -> tuple[float, float]:
    """The Wilson score interval of k in n (z = 1.645: each side 95%)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def ensure_verifier_onnx(model_dir: Path, weights: Path, cache_dir: Path, *, quantized: bool = True) -> Path:
    digest = hashlib.sha256(f"{_EXPORT_VERSION}:{model_hash(model_dir)}".encode())
    digest.update(weights.read_bytes())
    target = cache_dir / f"verifier-{digest.hexdigest()[:16]}{'' if quantized else '-fp32'}.onnx"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".onnx.tmp")
    os.close(fd)
    try:
        _export(model_dir, weights, Path(tmp), quantized)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def build_torch(model_dir: Path, weights: Path) -> Any:
    """The verifier as a torch module: (input_ids, attention_mask, token_type_ids) -> score."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    state = load_file(str(weights))
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata() or {}
    scale = float(meta.get("lora_scale", 1.0))
    head = torch.nn.Linear(bert.config.hidden_size, 1)
    head.load_state_dict({"weight": state.pop("head.weight").float(), "bias": state.pop("head.bias").float()})
    modules = dict(bert.named_modules())
    with torch.no_grad():
        for key in [k for k in state if k.endswith(".lora_A")]:
            name = key.removesuffix(".lora_A")
            if name not in modules:
                raise ValueError(f"{weights}: an update for {name}, which the model does not have")
            a, b = state[key].float(), state[f"{name}.lora_B"].float()
            modules[name].weight += (b @ a) * scale  # the low-rank update, merged: the export is a plain BERT

    class Scored(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert, self.head = bert, head

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.sigmoid(self.head(mean).squeeze(-1))

    return Scored().eval()


def _export(model_dir: Path, weights: Path, target: Path, quantized: bool = True) -> None:
    import torch

    from gateway.offline.onnx_export import _fuse

    model = build_torch(model_dir, weights)
    sample = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dynamic = {n: {0: "batch", 1: "seq"} for n in names} | {"score": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (sample, sample, torch.zeros_like(sample)),
            str(target),
            input_names=names,
            output_names=["score"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    config = model.bert.config
    _fuse(target, config.num_attention_heads, config.hidden_size, config.num_hidden_layers)
    if quantized:
        _quantize(target)


def _quantize(path: Path) -> None:
    """Weights to int8 and activations to int8 at run time (ONNX Runtime's dynamic quantization):
    the verifier runs in less than half the time, and its calibration scores are this file's."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it suggests a pre-processing pass for every model; not needed here
    try:
        quantized = path.with_suffix(".int8.tmp")
        quantize_dynamic(
            str(path), str(quantized), weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}
        )
        os.replace(quantized, path)
    finally:
        root.setLevel(level)
