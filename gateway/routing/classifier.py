"""The complexity classifier: which tier a request needs. Pure and synchronous, no I/O once loaded.

    request ─▶ features (features.py) ─┐
    embedding (shared with the cache) ─┴▶ logistic head ─┐
                                    kNN over exemplars ─┴▶ blend ─▶ P(tier) ─▶ score ─▶ tier

The score is the expected tier on a 0 (smallest) to 1 (largest) scale; a request goes to the largest
tier whose threshold the score (plus the router's bias) reaches. `gateway router-train` fits the
head, picks the blend, k and the thresholds by cross-validation on labelled prompts, and writes
everything, exemplars included, to one JSON file under config/.
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

_POINTS: dict[int, np.ndarray] = {}
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "config" / "router" / "model.json"


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
    weights: np.ndarray
    """(tiers, features + embedding dim)"""
    bias: np.ndarray
    exemplars: np.ndarray
    """(n, dim), unit rows"""
    exemplar_tiers: np.ndarray
    k: int
    blend: float
    """Weight of the logistic head; the rest is kNN."""
    thresholds: tuple[float, ...]
    """Per tier, ascending; the first is 0."""

    @property
    def gain(self) -> float:
        """The embedding's weight in the head: √dim gives its coordinates the unit variance the
        standardised features have, so one L2 penalty treats both alike."""
        return float(np.sqrt(self.dim))

    @property
    def dim(self) -> int:
        return int(self.exemplars.shape[1])

    def probabilities(self, feats: Sequence[float], vector: np.ndarray) -> np.ndarray:
        return self._blend(self._head(feats, vector), self._knn(vector))

    def decide(
        self,
        payload: Mapping[str, Any],
        vector: np.ndarray | None,
        *,
        thresholds: Sequence[float] | None = None,
        bias: float = 0.0,
    ) -> Decision:
        """The tier for `payload`. Without a vector (no text to embed) the features decide alone."""
        feats = features(payload)
        vector = np.zeros(self.dim, dtype=np.float32) if vector is None else vector
        head = self._head(feats, vector)
        near = self._knn(vector)
        probs = self._blend(head, near)
        score = self.score(probs)
        index = pick(score + bias, thresholds or self.thresholds)
        return Decision(
            self.tiers[index],
            score,
            dict(zip(self.tiers, probs.round(4).tolist(), strict=True)),
            self._reasons(feats, index, near),
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

    def _head(self, feats: Sequence[float], vector: np.ndarray) -> np.ndarray:
        x = np.concatenate([(np.asarray(feats, dtype=np.float32) - self.mean) / self.scale, vector * self.gain])
        return softmax(self.weights @ x + self.bias)

    def _knn(self, vector: np.ndarray) -> np.ndarray:
        sims = self.exemplars @ vector
        top = np.argpartition(-sims, min(self.k, len(sims) - 1))[: self.k]
        votes = np.zeros(len(self.tiers), dtype=np.float64)
        np.add.at(votes, self.exemplar_tiers[top], np.exp(8.0 * sims[top]))
        share: np.ndarray = votes / votes.sum()
        return share

    def _blend(self, head: np.ndarray, near: np.ndarray) -> np.ndarray:
        return self.blend * head + (1.0 - self.blend) * near

    def _reasons(self, feats: Sequence[float], index: int, near: np.ndarray) -> tuple[str, ...]:
        standard = (np.asarray(feats, dtype=np.float32) - self.mean) / self.scale
        pull = self.weights[index, : len(FEATURE_NAMES)] * standard
        top = np.argsort(-pull)[:3]
        named = tuple(f"{FEATURE_NAMES[i]} {pull[i]:+.2f}" for i in top if pull[i] > 0.05)
        return (*named, f"neighbours {self.tiers[int(np.argmax(near))]} {near.max():.2f}")

    def to_json(self) -> dict[str, Any]:
        return {
            "tiers": list(self.tiers),
            "features": list(FEATURE_NAMES),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.round(6).tolist(),
            "bias": self.bias.tolist(),
            "exemplars": base64.b64encode(self.exemplars.astype(np.float16).tobytes()).decode(),
            "exemplar_tiers": self.exemplar_tiers.tolist(),
            "k": self.k,
            "blend": self.blend,
            "thresholds": list(self.thresholds),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ComplexityModel:
        if list(data["features"]) != list(FEATURE_NAMES):
            raise ValueError("the model was trained on other features; run `gateway router-train` again")
        weights = np.asarray(data["weights"], dtype=np.float32)
        dim = weights.shape[1] - len(FEATURE_NAMES)
        exemplars = np.frombuffer(base64.b64decode(data["exemplars"]), dtype=np.float16).astype(np.float32).reshape(-1, dim)
        return cls(
            tiers=tuple(data["tiers"]),
            mean=np.asarray(data["mean"], dtype=np.float32),
            scale=np.asarray(data["scale"], dtype=np.float32),
            weights=weights,
            bias=np.asarray(data["bias"], dtype=np.float32),
            exemplars=exemplars,
            exemplar_tiers=np.asarray(data["exemplar_tiers"], dtype=np.int64),
            k=int(data["k"]),
            blend=float(data["blend"]),
            thresholds=tuple(float(t) for t in data["thresholds"]),
        )

    @classmethod
    def load(cls, path: str | Path) -> ComplexityModel:
        return cls.from_json(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")


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
