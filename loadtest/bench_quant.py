"""Decode speed of the bundled engine at batch 1 with weight-only quantization, one run.

The random-weight Llama-shaped checkpoint of preset `100m` (about 110M parameters); one request at
a time (a 64-token prompt, 128 greedy output tokens, EOS ignored); decode tokens per second counts
the output tokens after the first over the time from the first to the last (prefill excluded),
median of `--runs` requests. Each scheme loads the same checkpoint.

    python -m loadtest.bench_quant                                  # CPU: float32, int8, int4
    python -m loadtest.bench_quant --device cuda --dtype bfloat16 --preset qwen2.5-0.5b   # a GPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from backends.local_engine import cpu_kernels
from backends.local_engine.cpu_kernels import PackedLinear
from backends.local_engine.engine import EngineSettings, LLMEngine
from backends.local_engine.quant import QuantLinear
from backends.local_engine.sampling import SamplingParams
from backends.local_engine.tiny import build
from loadtest.report import footer

SCHEMES = {
    "none": {},
    "int8": {"quantization": "int8"},
    "int4": {"quantization": "int4", "quant_group_size": 128},
    "int8+lm_head": {"quantization": "int8", "quantize_lm_head": True},
}


def decode_rate(engine: LLMEngine, prompt: list[int], tokens: int) -> float:
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    engine.add_request("r", prompt, params)
    stamps: list[float] = []
    while engine.has_unfinished():
        for delta in engine.step():
            stamps.extend(time.perf_counter() for _ in delta.token_ids)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def weight_megabytes(engine: LLMEngine) -> float:
    """The weights as the kernels hold them: a float32 layer on the CPU keeps oneDNN's reordered copy
    and its panels (or, before the kernels are built, the plain weight); a matrix shared (tied
    embeddings) counts once."""
    model = engine.runner.model
    held: dict[int, int] = {}
    for module in model.modules():
        if isinstance(module, QuantLinear):
            held[id(module)] = module.weight_bytes()
        elif isinstance(module, PackedLinear):
            held[id(module)] = module.packed.numel() * module.packed.element_size()
            second = module.panels if module.panels is not None else module.weight
            assert second is not None
            held[second.data_ptr()] = second.numel() * second.element_size()
        elif isinstance(module, torch.nn.Linear | torch.nn.Embedding):
            held[module.weight.data_ptr()] = module.weight.numel() * module.weight.element_size()
    return sum(held.values()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="100m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--schemes", default="none,int8,int4,int8+lm_head")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    folder = build(Path(tempfile.mkdtemp()) / args.preset, args.preset, seed=0)
    prompt = [1000 + (i * 7919) % 20000 for i in range(64)]
    rows = []
    for name in args.schemes.split(","):
        engine = LLMEngine(
            EngineSettings(model=str(folder), device=args.device, dtype=args.dtype, num_kv_blocks=64, **SCHEMES[name])  # type: ignore[arg-type]
        )
        if args.device == "cpu":
            cpu_kernels.decode_kernel(wait=True)  # every scheme on the CPU kernels, the first one too
        decode_rate(engine, prompt, 8)  # warm-up (packs the float32 panels)
        rates = [decode_rate(engine, prompt, args.tokens) for _ in range(args.runs)]
        rows.append((name, weight_megabytes(engine), statistics.median(rates)))
        del engine
    base = rows[0][2]
    print(f"| weights | linear + embedding MB | decode tokens/s (batch 1) | vs {rows[0][0]} |")
    print("|---|---|---|---|")
    for name, megabytes, rate in rows:
        print(f"| {name} | {megabytes:.0f} | {rate:.1f} | {rate / base:.2f}x |")
    print()
    print("\n".join(footer("loadtest.bench_quant", f", torch {torch.__version__}")))


if __name__ == "__main__":
    main()
