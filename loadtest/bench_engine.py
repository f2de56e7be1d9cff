"""The bundled engine's throughput against Hugging Face `generate`, same model, same requests, one run.

A random-weight Llama-shaped checkpoint (preset `100m`: about 110M parameters) and a fixed set of
requests: input lengths drawn from 64-512 tokens, output lengths from 32-256, EOS ignored, greedy.
Three ways to serve them:

- engine: all requests submitted at once; continuous batching does the rest;
- HF one at a time: `model.generate` per request;
- HF static batching: requests in arrival order, `--hf-batch` at a time, left-padded; a batch runs
  until its longest output is done (tokens past a request's own length are not counted).

Output tokens per second counts the requested output tokens only.

    python -m loadtest.bench_engine                            # 64 requests, HF batches of 8 and 64
    python -m loadtest.bench_engine --hf-single 16             # HF one at a time on the first 16 only
    python -m loadtest.bench_engine --torch-engine             # and the engine without its CPU kernels
    python -m loadtest.bench_engine --device cuda --dtype bfloat16 --preset qwen2.5-0.5b   # on a GPU
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from backends.local_engine import cpu_kernels
from backends.local_engine.engine import EngineSettings, LLMEngine
from backends.local_engine.sampling import SamplingParams
from backends.local_engine.tiny import build
from loadtest.report import footer


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    output: int


def workload(n: int, seed: int, low_in: int, high_in: int, low_out: int, high_out: int) -> list[Request]:
    rng = random.Random(seed)
    return [
        Request([rng.randrange(1000, 30000) for _ in range(rng.randint(low_in, high_in))], rng.randint(low_out, high_out))
        for _ in range(n)
    ]


@dataclass
class Result:
    name: str
    requests: int
    tokens: int
    seconds: float
    ttft: list[float] | None = None
    tpot: list[float] | None = None

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def run_engine(
    folder: Path, requests: list[Request], args: argparse.Namespace, name: str = "engine (continuous batching)"
) -> Result:
    settings = EngineSettings(
        model=str(folder),
        dtype=args.dtype,
        device=args.device,
        max_num_batched_tokens=args.max_batched_tokens,
        max_num_seqs=args.max_seqs,
        num_kv_blocks=args.kv_blocks,
    )
    engine = LLMEngine(settings)
    if args.device == "cpu" and cpu_kernels.enabled() and cpu_kernels.decode_kernel(wait=True) is None:
        print("note: the C++ decode kernel is unavailable; the engine decodes on the torch path")
    engine.generate([requests[0].prompt[:16]], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))  # warm-up
    _sync(args.device)
    start = time.perf_counter()
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for i, r in enumerate(requests):
        engine.add_request(f"r{i}", r.prompt, SamplingParams(temperature=0, max_tokens=r.output, ignore_eos=True))
    tokens = 0
    while engine.has_unfinished():
        deltas = engine.step()
        now = time.perf_counter()
        for d in deltas:
            tokens += len(d.token_ids)
            first.setdefault(d.request_id, now)
            last[d.request_id] = now
    seconds = time.perf_counter() - start
    ttft = sorted(first[f"r{i}"] - start for i in range(len(requests)))
    tpot = sorted((last[f"r{i}"] - first[f"r{i}"]) / max(1, r.output - 1) for i, r in enumerate(requests))
    return Result(name, len(requests), tokens, seconds, ttft, tpot)


def run_hf(model: torch.nn.Module, requests: list[Request], batch: int, device: str) -> Result:
    useful = 0
    _sync(device)
    start = time.perf_counter()
    for at in range(0, len(requests), batch):
        group = requests[at : at + batch]
        width = max(len(r.prompt) for r in group)
        ids = torch.zeros((len(group), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, r in enumerate(group):  # left padding, as generation needs
            ids[row, width - len(r.prompt) :] = torch.tensor(r.prompt)
            mask[row, width - len(r.prompt) :] = 1
        longest = max(r.output for r in group)
        with torch.inference_mode():
            out = model.generate(  # type: ignore[operator]
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                pad_token_id=0,
            )
        assert out.shape[1] == width + longest
        useful += sum(r.output for r in group)
    _sync(device)
    name = "HF generate, one at a time" if batch == 1 else f"HF generate, static batches of {batch}"
    return Result(name, len(requests), useful, time.perf_counter() - start)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="100m")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input", default="64-512", help="input length range")
    parser.add_argument("--output", default="32-256", help="output length range")
    parser.add_argument("--hf-single", type=int, default=None, help="HF one at a time on the first N requests (default: all)")
    parser.add_argument("--hf-batch", default="8,64", help="HF static batch sizes, comma-separated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-batched-tokens", type=int, default=2048)
    parser.add_argument("--max-seqs", type=int, default=128)
    parser.add_argument("--kv-blocks", type=int, default=None)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument(
        "--torch-engine", action="store_true", help="also run the engine with its CPU kernels off (LOCAL_ENGINE_CPU_KERNELS=0)"
    )
    args = parser.parse_args()

    low_in, high_in = (int(x) for x in args.input.split("-"))
    low_out, high_out = (int(x) for x in args.output.split("-"))
    requests = workload(args.requests, args.seed, low_in, high_in, low_out, high_out)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp) / args.preset, args.preset)
        engines = [run_engine(folder, requests, args)]
        if args.torch_engine:
            os.environ["LOCAL_ENGINE_CPU_KERNELS"] = "0"
            try:
                engines.append(run_engine(folder, requests, args, "engine, CPU kernels off"))
            finally:
                del os.environ["LOCAL_ENGINE_CPU_KERNELS"]
        hf: list[Result] = []
        if not args.skip_hf:
            from transformers import AutoModelForCausalLM

            dtype = getattr(torch, args.dtype)
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(args.device).eval()
            warm = torch.tensor([[101, 102]], device=args.device)
            model.generate(input_ids=warm, max_new_tokens=2, do_sample=False, pad_token_id=0)
            hf.append(run_hf(model, requests[: args.hf_single or len(requests)], 1, args.device))
            for size in (int(b) for b in args.hf_batch.split(",") if b):
                hf.append(run_hf(model, requests, size, args.device))
    results = engines + hf
    best_hf = max((r.rate for r in hf), default=None)
    print(f"\n{args.requests} requests, input {args.input} tokens, output {args.output} tokens, greedy, EOS ignored, "
          f"preset {args.preset}, {args.dtype} on {args.device}\n")  # fmt: skip
    print(f"| {'server':38} | requests | output tokens | seconds | output tokens/s | vs best HF |")
    print(f"| {'-' * 38} | -------: | ------------: | ------: | --------------: | ---------: |")
    for r in results:
        ratio = f"{r.rate / best_hf:.2f}x" if best_hf else "-"
        print(f"| {r.name:38} | {r.requests:8} | {r.tokens:13} | {r.seconds:7.1f} | {r.rate:15.1f} | {ratio:>10} |")
    print()
    for engine in engines:
        assert engine.ttft is not None and engine.tpot is not None
        ttft = f"TTFT p50 {_pct(engine.ttft, 0.5):.2f} s, p99 {_pct(engine.ttft, 0.99):.2f} s"
        tpot = f"TPOT p50 {_pct(engine.tpot, 0.5) * 1000:.1f} ms, p99 {_pct(engine.tpot, 0.99) * 1000:.1f} ms"
        print(f"{engine.name}: {ttft}; {tpot} (all submitted at t=0)")
    threads = f", torch threads {torch.get_num_threads()}"
    device = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print("\n".join(footer("loadtest.bench_engine", threads + device)))


if __name__ == "__main__":
    main()
