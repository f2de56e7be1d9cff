"""The complexity classifier: which tier a request needs. Pure and synchronous, no I/O once loaded.

    request ─▶ task apart from material (task.py) ─▶ features (features.py) ─┐
    embedding of the instruction (shared with the cache when it is the turn) ─┴▶ MLP head
                                                                  ─▶ P(tier) ─▶ score ─▶ tier

The head is a one-hidden-layer network (ReLU) over the features (held inside the range they had in
training, then standardised) and the embedding.
The score is the expected tier on a 0 (smallest) to 1 (largest) scale; a request goes to the largest
tier whose threshold the score (plus the router's bias) reaches. `gateway router-train` fits the
head, picks its L2 strength by cross-validation and the thresholds on the cross-validated scores,
and writes everything to one JSON file under config/.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.routing.features import FEATURE_NAMES, features
from gateway.routing.task import Task

_POINTS: dict[int, np.ndarray] = {}
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "config" / "router" / "model.json"
FORMAT = "mlp-2"
"""The model file's format; a file in another one is refused with the command that rebuilds it."""


@dataclass(frozen=True, slots=True)
class Decision:
    tier: str
    score: float
    """Expected tier, 0 (smallest) to 1 (largest)."""
    probabilities: dict[str, float]
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ComplexityModel:
    tiers: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    low: np.ndarray
    high: np.ndarray
    """Each feature's range over the training rows: a request's features are held inside it, so the
    score does not run on past what was learned (a network's output grows without end along a
    feature, and a 190,000-token document is longer than any row it learned from)."""
    hidden_weights: np.ndarray
    """(features + embedding dim, hidden)"""
    hidden_bias: np.ndarray
    weights: np.ndarray
    """(hidden, tiers)"""
    bias: np.ndarray
    dim: int
    """The embedding's size."""
    gain: float
    """The embedding's scale in the head's input, against the standardised features'."""
    thresholds: tuple[float, ...]
    """Per tier, ascending; the first is 0."""

    def probabilities(self, feats: Sequence[float], vector: np.ndarray) -> np.ndarray:
        probs: np.ndarray = self._head(self._input(feats, vector))[0]
        return probs

    def decide(
        self,
        payload: Mapping[str, Any],
        vector: np.ndarray | None,
        *,
        thresholds: Sequence[float] | None = None,
        bias: float = 0.0,
        found: Task | None = None,
    ) -> Decision:
        """The tier for `payload` (`found`: its `task`, when the caller has it already). Without a
        vector (no text to embed) the features decide alone."""
        feats = features(payload, found)
        vector = np.zeros(self.dim, dtype=np.float32) if vector is None else vector
        x = self._input(feats, vector)
        probs = self._head(x)[0]
        score = self.score(probs)
        index = pick(score + bias, thresholds or self.thresholds)
        return Decision(
            self.tiers[index],
            score,
            dict(zip(self.tiers, probs.round(4).tolist(), strict=True)),
            self._reasons(x, index, float(probs[index])),
        )

    def score(self, probs: np.ndarray) -> float:
        return float(probs @ self.scale_points)

    @property
    def scale_points(self) -> np.ndarray:
        """Each tier's place on the score's 0..1 scale."""
        points = _POINTS.get(len(self.tiers))
        if points is None:
            points = _POINTS[len(self.tiers)] = np.linspace(0.0, 1.0, len(self.tiers))
        return points

    def _input(self, feats: Sequence[float], vector: np.ndarray) -> np.ndarray:
        held = np.clip(np.asarray(feats, dtype=np.float32), self.low, self.high)
        standard = (held - self.mean) / self.scale
        return np.concatenate([standard, np.asarray(vector, dtype=np.float32) * self.gain])[None, :]

    def _head(self, x: np.ndarray) -> np.ndarray:
        hidden = np.maximum(x @ self.hidden_weights + self.hidden_bias, 0.0)
        return softmax(hidden @ self.weights + self.bias)

    def _reasons(self, x: np.ndarray, index: int, chosen: float) -> tuple[str, ...]:
        """The features that pull most toward the chosen tier: its probability, less the same with
        the feature at its mean. A feature at its mean (0 once standardised) takes its row of the
        hidden weights out of the hidden layer's input, so every feature's case is one subtraction
        from the request's, not a pass of the whole input per feature: a (features x input) by
        (input x hidden) product is past the size at which OpenBLAS runs it on several threads,
        which then spin beside the embedder's on a small machine (the embedding took 2.5 times as
        long, and decisions' p99 went from 0.7 to 4 ms, in `router-eval` on 2 cores)."""
        n = len(FEATURE_NAMES)
        hidden = x @ self.hidden_weights + self.hidden_bias
        without = np.maximum(hidden - x[0, :n, None] * self.hidden_weights[:n], 0.0)
        pull = chosen - softmax(without @ self.weights + self.bias)[:, index]
        top = np.argsort(-pull)[:3]
        named = tuple(f"{FEATURE_NAMES[i]} {pull[i]:+.2f}" for i in top if pull[i] > 0.02)
        return named or ("the instruction's embedding",)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "tiers": list(self.tiers),
            "features": list(FEATURE_NAMES),
            "dim": self.dim,
            "gain": self.gain,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "hidden_weights": _pack(self.hidden_weights),
            "hidden_bias": self.hidden_bias.round(6).tolist(),
            "weights": self.weights.round(6).tolist(),
            "bias": self.bias.round(6).tolist(),
            "thresholds": list(self.thresholds),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ComplexityModel:
        if data.get("format") != FORMAT or list(data["features"]) != list(FEATURE_NAMES):
            raise ValueError("the model was trained on other features or in another format; run `gateway router-train` again")
        dim = int(data["dim"])
        hidden = np.asarray(data["hidden_bias"], dtype=np.float32)
        return cls(
            tiers=tuple(data["tiers"]),
            mean=np.asarray(data["mean"], dtype=np.float32),
            scale=np.asarray(data["scale"], dtype=np.float32),
            low=np.asarray(data["low"], dtype=np.float32),
            high=np.asarray(data["high"], dtype=np.float32),
            hidden_weights=_unpack(data["hidden_weights"]).reshape(len(FEATURE_NAMES) + dim, len(hidden)),
            hidden_bias=hidden,
            weights=np.asarray(data["weights"], dtype=np.float32),
            bias=np.asarray(data["bias"], dtype=np.float32),
            dim=dim,
            gain=float(data["gain"]),
            thresholds=tuple(float(t) for t in data["thresholds"]),
        )

    @classmethod
    def load(cls, path: str | Path) -> ComplexityModel:
        return cls.from_json(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")


def _pack(array: np.ndarray) -> str:
    """float32, little-endian, base64 (a large matrix as text without losing precision)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode()


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def pick(score: float, thresholds: Sequence[float]) -> int:
    """The largest tier whose threshold `score` reaches (the smallest when none does)."""
    index = 0
    for i, threshold in enumerate(thresholds):
        if score >= threshold:
            index = i
    return index


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    result: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return result
