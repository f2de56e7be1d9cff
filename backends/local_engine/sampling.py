"""Sampling parameters (validated on construction) and the batched sampler.

Order per row: penalties on the raw scores, then temperature, top-k, top-p and min-p, then a draw from
the row's own generator (so a seeded request gets the same tokens in any batch). Log-probabilities are
those of the model's raw distribution, before penalties and temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from backends.local_engine.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 means off."""
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    """Over prompt and output tokens, as transformers: positive scores divided, negative multiplied."""
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    """Over output tokens, as OpenAI defines them."""
    seed: int | None = None
    max_tokens: int = 256
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    """Return the chosen token's log-probability and this many alternatives (0 to 20)."""
    include_stop_str_in_output: bool = False
    cache_salt: str | None = None
    """Keeps this request's KV blocks apart from other requests' in the prefix cache."""
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _check(1 <= self.n <= 16, "n must be between 1 and 16", "n")
        _check(_finite(self.temperature) and 0 <= self.temperature <= 2, "temperature must be between 0 and 2", "temperature")
        _check(_finite(self.top_p) and 0 < self.top_p <= 1, "top_p must be in (0, 1]", "top_p")
        _check(self.top_k >= 0, "top_k must be 0 (off) or positive", "top_k")
        _check(_finite(self.min_p) and 0 <= self.min_p <= 1, "min_p must be between 0 and 1", "min_p")
        _check(
            _finite(self.repetition_penalty) and self.repetition_penalty > 0,
            "repetition_penalty must be > 0",
            "repetition_penalty",
        )
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _check(_finite(value) and -2 <= value <= 2, f"{name} must be between -2 and 2", name)
        _check(self.max_tokens >= 1, "max_tokens must be at least 1", "max_tokens")
        _check(0 <= self.min_tokens <= self.max_tokens, "min_tokens must be between 0 and max_tokens", "min_tokens")
        _check(self.logprobs is None or 0 <= self.logprobs <= 20, "top_logprobs must be between 0 and 20", "top_logprobs")
        _check(len(self.stop) <= 16 and all(self.stop), "stop: at most 16 non-empty strings", "stop")
        _check(self.n == 1 or self.temperature > 0, "n > 1 needs temperature > 0 (greedy copies would be identical)", "n")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(slots=True)
class SampleRow:
    """What the sampler needs of one sequence."""

    params: SamplingParams
    generator: torch.Generator | None
    prompt: list[int]
    output: list[int]
    banned: tuple[int, ...] = ()
    """Token ids that may not be chosen (stop tokens before `min_tokens`)."""


@dataclass(slots=True)
class Sampled:
    tokens: list[int]
    logprobs: list[float] | None  # the chosen token's, per row (None when no row asked)
    top: list[list[tuple[int, float]]] | None


def sample(logits: torch.Tensor, rows: list[SampleRow]) -> Sampled:
    """logits: [rows, vocab] float32 -> one token per row."""
    raw = logits
    logits = _penalise(logits.clone(), rows)
    tokens = logits.argmax(-1)
    sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        tokens[index] = _draw(logits[index], [rows[i] for i in sampled])
    token_list = tokens.tolist()
    want = [r.params.logprobs for r in rows]
    if all(w is None for w in want):
        return Sampled(token_list, None, None)
    logprobs = torch.log_softmax(raw, dim=-1)
    chosen = logprobs.gather(1, tokens[:, None]).squeeze(1).tolist()
    k = max(w or 0 for w in want)
    top_values, top_ids = logprobs.topk(k, dim=-1) if k else (logprobs[:, :0], logprobs[:, :0].long())
    top = [list(zip(top_ids[i, : w or 0].tolist(), top_values[i, : w or 0].tolist(), strict=True)) for i, w in enumerate(want)]
    return Sampled(token_list, chosen, top)


def _penalise(logits: torch.Tensor, rows: list[SampleRow]) -> torch.Tensor:
    for i, row in enumerate(rows):
        p = row.params
        if row.banned:
            logits[i, list(row.banned)] = -math.inf
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(row.prompt) | set(row.output)), device=logits.device, dtype=torch.long)
            scores = logits[i, seen]
            logits[i, seen] = torch.where(scores > 0, scores / p.repetition_penalty, scores * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and row.output:
            ids, counts = torch.unique(torch.tensor(row.output, device=logits.device), return_counts=True)
            logits[i, ids] -= p.presence_penalty + p.frequency_penalty * counts.to(logits.dtype)
    return logits


def _draw(logits: torch.Tensor, rows: list[SampleRow]) -> torch.Tensor:
    """[rows, vocab] -> [rows] token ids, by temperature, top-k, top-p and min-p."""
    temps = torch.tensor([r.params.temperature for r in rows], device=logits.device)
    probs = torch.softmax(logits / temps[:, None], dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    ranks = torch.arange(probs.shape[-1], device=probs.device)[None, :]
    top_k = torch.tensor([r.params.top_k or probs.shape[-1] for r in rows], device=probs.device)
    top_p = torch.tensor([r.params.top_p for r in rows], device=probs.device)
    min_p = torch.tensor([r.params.min_p for r in rows], device=probs.device)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above each
    drop = (ranks >= top_k[:, None]) | (before >= top_p[:, None]) | (sorted_probs < min_p[:, None] * sorted_probs[:, :1])
    drop[:, 0] = False  # the most likely token always stays
    kept = sorted_probs.masked_fill(drop, 0.0)
    picks = [torch.multinomial(kept[i], 1, generator=row.generator) for i, row in enumerate(rows)]
    return order.gather(1, torch.stack(picks)).squeeze(1)


def _check(ok: bool, message: str, param: str) -> None:
    if not ok:
        raise InvalidRequest(message, param=param)


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)
