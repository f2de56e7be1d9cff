"""LLMEngine: requests in, token and text deltas out, one `step()` at a time. Single-threaded;
`server.py` runs it on its own thread."""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from backends.local_engine.block_manager import BlockManager
from backends.local_engine.errors import InvalidRequest
from backends.local_engine.loader import Checkpoint, load_model, resolve_dtype
from backends.local_engine.quant import QuantConfig
from backends.local_engine.runner import ModelRunner, kv_blocks_for
from backends.local_engine.sampling import SampleRow, SamplingParams, sample
from backends.local_engine.scheduler import Scheduler, SchedulerSettings
from backends.local_engine.sequence import Sequence
from backends.local_engine.tokenizer import Detokenizer

log = logging.getLogger("local_engine")


KV_CACHE_DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "fp8": torch.float8_e4m3fn,
}
"""The KV cache's element type by setting; auto: the model's."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine runs a checkpoint. Every field has a command-line flag of the same name."""

    model: str
    """A Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json)."""
    dtype: str = "auto"
    """auto (the checkpoint's on GPU, float32 on CPU), bfloat16, float16 or float32."""
    device: str = "auto"
    block_size: int = 16
    kv_memory_fraction: float = 0.5
    """Share of the memory left after loading the weights that the KV cache takes (GPU: device memory; CPU: RAM)."""
    num_kv_blocks: int | None = None
    """A fixed number of KV blocks instead (tests, small machines)."""
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 128
    max_model_len: int | None = None
    """Default: the checkpoint's."""
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    max_waiting: int = 4096
    seed: int = 0
    """Seeds the draws of requests that bring no seed of their own."""
    kv_cache_dtype: str = "auto"
    """auto (the model's dtype), float16 or bfloat16 (half of float32's memory and reads per cached
    token: llama.cpp's default cache is float16), or fp8 (float8 e4m3: half the memory of bf16)."""
    quantization: str = "none"
    """Weight-only quantization of the linear layers at load: none, int8 (per output channel) or int4."""
    quant_group_size: int = 128
    quant_symmetric: bool = True
    quantize_lm_head: bool = False

    def quant(self) -> QuantConfig | None:
        if self.quantization == "none":
            return None
        return QuantConfig(self.quantization, self.quant_group_size, self.quant_symmetric, self.quantize_lm_head)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if not 0 < self.kv_memory_fraction <= 1:
            raise ValueError("kv_memory_fraction must be in (0, 1]")
        if self.block_size < 1 or (self.num_kv_blocks is not None and self.num_kv_blocks < 1):
            raise ValueError("block_size and num_kv_blocks must be positive")
        self.quant()  # a bad scheme or group size is refused here
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}")


@dataclass(slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass(slots=True)
class Delta:
    """One sequence's progress in one step."""

    request_id: str
    index: int
    token_ids: list[int]
    text: str
    finish_reason: str | None
    num_prompt_tokens: int
    num_cached_tokens: int
    num_output_tokens: int
    logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class _Stream:
    """Text bookkeeping of one sequence: stop strings are looked for in the decoded text, and text that
    could be the start of a stop string is held back until it is known not to be."""

    detok: Detokenizer
    held: str = ""
    hold: int = 0
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(slots=True)
class _Request:
    request_id: str
    params: SamplingParams
    seqs: list[Sequence]
    children: list[Sequence]
    """Choices 1..n-1, admitted once choice 0 has computed the prompt (so that they share its blocks)."""


class LLMEngine:
    def __init__(self, settings: EngineSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.checkpoint = Checkpoint.open(settings.model)
        self.tokenizer = self.checkpoint.tokenizer
        config = self.checkpoint.config
        device = torch.device(settings.device if settings.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
        dtype = resolve_dtype(settings.dtype, config, device)
        self.max_model_len = min(settings.max_model_len or config.max_model_len, config.max_model_len)
        model = load_model(self.checkpoint, dtype, device, settings.quant())
        kv_dtype = KV_CACHE_DTYPES[settings.kv_cache_dtype] or dtype
        blocks_per_seq = -(-self.max_model_len // settings.block_size)
        num_blocks = settings.num_kv_blocks or kv_blocks_for(
            config, kv_dtype, settings.block_size, settings.kv_memory_fraction, device, cap=blocks_per_seq * settings.max_num_seqs
        )
        self.runner = ModelRunner(model, num_blocks, settings.block_size, kv_dtype)
        self.blocks = BlockManager(num_blocks, settings.block_size, settings.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerSettings(
                max_model_len=self.max_model_len,
                max_num_batched_tokens=max(
                    settings.max_num_batched_tokens, 1 if settings.enable_chunked_prefill else self.max_model_len
                ),
                max_num_seqs=settings.max_num_seqs,
                enable_chunked_prefill=settings.enable_chunked_prefill,
                max_waiting=settings.max_waiting,
            ),
            self.blocks,
        )
        self.device = device
        self.eos = frozenset(self.checkpoint.eos_token_ids)
        self._requests: dict[str, _Request] = {}
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count()
        self._rng = random.Random(settings.seed)
        self.counters: dict[str, float] = {"prompt_tokens": 0, "generation_tokens": 0, "requests": 0, "steps": 0}
        self.counters["busy_seconds"] = 0.0  # time spent in steps that computed something (GPU-hour pricing)
        self.counters["computed_tokens"] = 0  # tokens run through the model (prefix-cache hits excluded)

    # -- requests

    def add_request(self, request_id: str, prompt: list[int], params: SamplingParams) -> None:
        if request_id in self._requests:
            raise InvalidRequest(f"request id {request_id!r} is already running")
        if not prompt:
            raise InvalidRequest("the prompt is empty", param="prompt")
        vocab = self.checkpoint.config.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise InvalidRequest(f"prompt token ids must be in [0, {vocab})", param="prompt")
        self.scheduler.check(len(prompt), params.max_tokens)
        now = self.clock()
        seqs = [self._sequence(request_id, i, prompt, params, now) for i in range(params.n)]
        self.scheduler.add(seqs[0])
        self._requests[request_id] = _Request(request_id, params, seqs, seqs[1:])
        self.counters["requests"] += 1
        self.counters["prompt_tokens"] += len(prompt)

    def _sequence(self, request_id: str, index: int, prompt: list[int], params: SamplingParams, now: float) -> Sequence:
        seq = Sequence(next(self._ids), request_id, index, list(prompt), len(prompt), params, now)
        if not params.greedy:
            seed = params.seed * 1_000_003 + index if params.seed is not None else self._rng.getrandbits(63)
            seq.generator = torch.Generator(self.device).manual_seed(seed)
        hold = max((len(s) for s in params.stop), default=1) - 1
        self._streams[seq.seq_id] = _Stream(Detokenizer(self.tokenizer, prompt), hold=hold)
        return seq

    def abort(self, request_id: str) -> bool:
        request = self._requests.pop(request_id, None)
        if request is None:
            return False
        for seq in request.seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
            self._streams.pop(seq.seq_id, None)
        return True

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    # -- the loop

    def step(self) -> list[Delta]:
        batch = self.scheduler.schedule()
        if not batch.items:
            return []
        self.counters["steps"] += 1
        started = time.perf_counter()
        sampling = [item.seq for item in batch.items if item.samples]
        logits = self.runner.run(batch)
        self.scheduler.computed(batch)
        deltas = self._sample(sampling, logits) if sampling else []
        self.counters["busy_seconds"] += time.perf_counter() - started
        self.counters["computed_tokens"] += batch.num_tokens
        return deltas

    def _sample(self, sampling: list[Sequence], logits: torch.Tensor) -> list[Delta]:
        rows = [SampleRow(s.params, s.generator, s.prompt_ids, s.output_ids, self._banned(s)) for s in sampling]
        result = sample(logits, rows)
        deltas = []
        for i, seq in enumerate(sampling):
            logprob = None
            if result.logprobs is not None and seq.params.logprobs is not None:
                assert result.top is not None
                logprob = TokenLogprob(result.tokens[i], result.logprobs[i], result.top[i])
            deltas.append(self._advance(seq, result.tokens[i], logprob))
            self._release_children(seq)
        return deltas

    def _advance(self, seq: Sequence, token: int, logprob: TokenLogprob | None) -> Delta:
        seq.token_ids.append(token)
        self.counters["generation_tokens"] += 1
        stream = self._streams[seq.seq_id]
        if logprob is not None:
            stream.pending_logprobs.append(logprob)
        reason = "stop" if self._is_stop_token(seq, token) else None
        text = "" if reason else stream.detok.push(token)  # a stop token's own text is not part of the answer
        stream.held += text
        emit, reason = self._cut_stop_string(seq, stream, reason)
        if reason is None and (seq.num_output >= seq.params.max_tokens or seq.num_tokens >= self.max_model_len):
            reason = "length"
        if reason is not None:
            emit += stream.held
            stream.held = ""
            self.scheduler.finish(seq, reason)
            self._finished(seq)
        delta = Delta(
            seq.request_id,
            seq.index,
            [token],
            emit,
            reason,
            seq.num_prompt_tokens,
            seq.num_cached,
            seq.num_output,
            stream.pending_logprobs if seq.params.logprobs is not None else None,
        )
        stream.pending_logprobs = []
        return delta

    def _is_stop_token(self, seq: Sequence, token: int) -> bool:
        return token in seq.params.stop_token_ids or (token in self.eos and not seq.params.ignore_eos)

    def _banned(self, seq: Sequence) -> tuple[int, ...]:
        """Tokens that may not be drawn yet: the stop tokens, until `min_tokens` have come out."""
        if seq.num_output >= seq.params.min_tokens:
            return ()
        return seq.params.stop_token_ids + (() if seq.params.ignore_eos else tuple(self.eos))

    def _cut_stop_string(self, seq: Sequence, stream: _Stream, reason: str | None) -> tuple[str, str | None]:
        """Text that can be sent now, and the finish reason if a stop string appeared."""
        text = stream.held
        if reason is not None:
            return "", reason  # the caller sends what is held
        if not seq.params.stop:
            stream.held = ""
            return text, None
        found = [(text.find(s), s) for s in seq.params.stop if s in text]
        if found and seq.num_output > seq.params.min_tokens:
            at, stop = min(found)
            stream.held = ""
            return text[: at + len(stop)] if seq.params.include_stop_str_in_output else text[:at], "stop"
        keep = min(stream.hold, len(text))
        emit, stream.held = text[: len(text) - keep], text[len(text) - keep :]
        return emit, None

    def _release_children(self, seq: Sequence) -> None:
        request = self._requests.get(seq.request_id)
        if request is None or not request.children or seq.index != 0:
            return
        for child in reversed(request.children):
            child.arrival = seq.arrival
            self.scheduler.add(child, front=True)
        request.children = []

    def _finished(self, seq: Sequence) -> None:
        request = self._requests[seq.request_id]
        if all(s.is_finished for s in request.seqs):
            del self._requests[seq.request_id]
            for s in request.seqs:
                self._streams.pop(s.seq_id, None)

    # -- introspection

    def stats(self) -> dict[str, float]:
        blocks = self.blocks
        return {
            "running": len(self.scheduler.running),
            "waiting": len(self.scheduler.waiting),
            "kv_usage": blocks.usage(),
            "kv_blocks": blocks.num_blocks,
            "prefix_hit_rate": blocks.hit_tokens / blocks.queried_tokens if blocks.queried_tokens else 0.0,
            "preemptions": self.scheduler.num_preemptions,
            **self.counters,
        }

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """Run prompts to completion (tests, benchmarks); the output token ids of each, in order."""
        if params.n != 1:
            raise ValueError("generate() runs one choice per prompt")
        ids = [f"gen-{next(self._ids)}" for _ in prompts]
        for request_id, prompt in zip(ids, prompts, strict=True):
            self.add_request(request_id, prompt, params)
        out: dict[str, list[int]] = {i: [] for i in ids}
        while self.has_unfinished():
            for delta in self.step():
                out[delta.request_id].extend(delta.token_ids)
        return [out[i] for i in ids]
