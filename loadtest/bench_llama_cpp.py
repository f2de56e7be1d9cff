"""The bundled engine against llama.cpp on the CPU: the same checkpoint, the same request shapes, one run.

The random-weight Llama of preset `100m` (about 110M parameters) is built, then written as GGUF
(tests/helpers/gguf_export.py: f32, f16 and q8_0) for llama.cpp, whose tools are built with CMake
from the llama.cpp sources inside the llama-cpp-python 0.3.36 sdist (once; kept in
~/.cache/gateway-peers/llama.cpp-0.3.36). `GGML_NATIVE` builds for this CPU, with AMX turned off:
the CPU reports it, the sandbox forbids it, and a q8_0 run dies with SIGILL without
`-mno-amx-tile -mno-amx-int8 -mno-amx-bf16`.

Three figures, each on `--threads` threads:
- batch-1 decode tokens/s: 128 greedy tokens after a short prompt (engine: a 64-token prompt, the
  time from the first to the last output token; llama.cpp: `llama-bench -p 0 -n 128`);
- TTFT of a 512-token prompt (engine: the time to the first output token of a fresh 512-token
  prompt; llama.cpp: 512 / the `llama-bench -p 512` prompt speed);
- throughput of 16 concurrent requests of 256 prompt and 128 output tokens: output tokens over the
  whole time, prefill included (engine: all 16 submitted at once; llama.cpp: `llama-batched-bench
  -npp 256 -ntg 128 -npl 16`, 16 parallel sequences).

The engine runs float32 and int8 (weight-only, per output channel; its default leaves the LM head in
float32, q8_0 quantizes it too, so both are run); float32 once more over a float16 KV cache, as
llama.cpp keeps its cache by default (`--kv-cache-dtype float16`); and float32 and int8 with the LM
head once more module by module (`cpu_kernels.FUSE_DECODE_LAYERS` off; float32 also without its
panel kernel, on oneDNN), so that the run measures what the one-call decode layer and the panels
change; llama.cpp f32, f16 and q8_0, each with its default float16 KV cache.

    python -m loadtest.bench_llama_cpp                 # 100m, 2 threads
    python -m loadtest.bench_llama_cpp --preset tiny   # a quick check of the harness
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from backends.local_engine import cpu_kernels
from backends.local_engine.engine import EngineSettings, LLMEngine
from backends.local_engine.sampling import SamplingParams
from backends.local_engine.tiny import build
from loadtest.report import footer

VERSION = "0.3.36"
CACHE = Path(os.environ.get("GATEWAY_PEERS_CACHE", Path.home() / ".cache" / "gateway-peers"))
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
DECODE, LONG, BATCH, BATCH_IN, BATCH_OUT = 128, 512, 16, 256, 128


def llama_tools() -> Path:
    """The folder holding llama-bench and llama-batched-bench, built on first use."""
    out = CACHE / f"llama.cpp-{VERSION}"
    if (out / "bin" / "llama-batched-bench").is_file():
        return out / "bin"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={VERSION}", "-d", tmp], check=True)  # fmt: skip
        with tarfile.open(next(Path(tmp).glob("*.tar.gz"))) as archive:
            archive.extractall(tmp, filter="data")
        source = next(Path(tmp).glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"
        build_dir = Path(tmp) / "build"
        flags = [f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]
        subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                        "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", *flags], check=True)  # fmt: skip
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "llama-bench", "llama-batched-bench",
                        "-j", str(os.cpu_count() or 2)], check=True)  # fmt: skip
        (out / "bin").mkdir(parents=True, exist_ok=True)
        for path in (build_dir / "bin").iterdir():
            if path.is_file():
                (out / "bin" / path.name).write_bytes(path.read_bytes())
                (out / "bin" / path.name).chmod(0o755)
    return out / "bin"


def prompt(n: int, rng: random.Random) -> list[int]:
    return [rng.randrange(1000, 30000) for _ in range(n)]


def greedy(tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)


def engine_round(engine: LLMEngine, rng: random.Random) -> dict[str, float]:
    """One measurement of each figure on the engine, after a short warm-up request (as llama-bench
    runs one before it measures): the round starts right after another server's."""
    engine.generate([prompt(64, rng)], greedy(8))
    stamps: list[float] = []
    engine.add_request(f"decode-{rng.random()}", prompt(64, rng), greedy(DECODE))
    while engine.has_unfinished():
        if engine.step():
            stamps.append(time.perf_counter())
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    start = time.perf_counter()
    engine.add_request(f"ttft-{rng.random()}", prompt(LONG, rng), greedy(1))
    while engine.has_unfinished():
        engine.step()
    ttft = time.perf_counter() - start
    start = time.perf_counter()
    engine.generate([prompt(BATCH_IN, rng) for _ in range(BATCH)], greedy(BATCH_OUT))
    return {"decode": decode, "ttft": ttft, "batch": BATCH * BATCH_OUT / (time.perf_counter() - start)}


def llama_round(tools: Path, gguf: Path, threads: int) -> dict[str, float]:
    """One measurement of each figure with llama.cpp's own tools."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(tools)}  # the tools' libggml / libllama lie beside them

    def run(tool: str, *args: str) -> str:
        command = [str(tools / tool), "-m", str(gguf), "-t", str(threads), *args]
        return subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout

    decode = float(json.loads(run("llama-bench", "-r", "1", "-o", "json", "-p", "0", "-n", str(DECODE)))[0]["avg_ts"])
    prefill = float(json.loads(run("llama-bench", "-r", "1", "-o", "json", "-p", str(LONG), "-n", "0"))[0]["avg_ts"])
    out = run("llama-batched-bench", "-c", str(BATCH * (BATCH_IN + BATCH_OUT)), "-b", "2048", "-ub", "512", "-npp", str(BATCH_IN),
              "-ntg", str(BATCH_OUT), "-npl", str(BATCH), "--output-format", "jsonl")  # fmt: skip
    row = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    return {"decode": decode, "ttft": LONG / prefill, "batch": BATCH * BATCH_OUT / float(row["t"])}


F32_ROWS = cpu_kernels.F32_PANEL_MAX_ROWS
F32_OFF, INT8_OFF = "engine float32, module by module on oneDNN", "engine int8, LM head too, module by module"
"""The same engines without the one-call decode layer (and float32 without its panels): what those change, in one run."""
F16_KV = "engine float32, float16 KV cache"
KV_BLOCKS = 2 * BATCH * (BATCH_IN + BATCH_OUT) // 16
"""Room for the 16 requests twice over, in 16-token blocks (four engines share the machine's memory)."""
ENGINES = {"engine float32": ("none", False, "auto"), F16_KV: ("none", False, "float16"),
           "engine int8": ("int8", False, "auto"), "engine int8, LM head too": ("int8", True, "auto"),
           F32_OFF: ("none", False, "auto"), INT8_OFF: ("int8", True, "auto")}  # fmt: skip
RIVALS = {"engine float32": "llama.cpp f32", F16_KV: "llama.cpp f32", "engine int8": "llama.cpp q8_0",
          "engine int8, LM head too": "llama.cpp q8_0", F32_OFF: "llama.cpp f32", INT8_OFF: "llama.cpp q8_0"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="100m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each figure is the median over them")
    args = parser.parse_args()
    from tests.helpers.gguf_export import export

    tools = llama_tools()
    torch.set_num_threads(args.threads)
    cpu_kernels.decode_kernel(wait=True)  # built (or found built) before the warm-ups, which then pack the panels
    samples: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp) / "ckpt", args.preset, seed=0)
        engines = {}
        for label, (scheme, lm_head, kv) in ENGINES.items():
            engines[label] = LLMEngine(
                EngineSettings(
                    model=str(folder),
                    quantization=scheme,
                    quantize_lm_head=lm_head,
                    kv_cache_dtype=kv,
                    enable_prefix_caching=False,
                    num_kv_blocks=KV_BLOCKS,
                )
            )
            engines[label].generate([prompt(64, random.Random(1))], greedy(8))  # warm up
        ggufs = {f"llama.cpp {kind}": export(folder, Path(tmp) / f"m-{kind}.gguf", kind) for kind in ("f32", "f16", "q8_0")}
        rng = random.Random(0)
        for _ in range(args.rounds):  # rounds take turns, so that the machine's drift reaches every row alike
            for label, engine in engines.items():
                cpu_kernels.FUSE_DECODE_LAYERS = label not in (F32_OFF, INT8_OFF)
                cpu_kernels.F32_PANEL_MAX_ROWS = 0 if label == F32_OFF else F32_ROWS
                for key, value in engine_round(engine, rng).items():
                    samples.setdefault(label, {}).setdefault(key, []).append(value)
            for label, gguf in ggufs.items():
                for key, value in llama_round(tools, gguf, args.threads).items():
                    samples.setdefault(label, {}).setdefault(key, []).append(value)
    figures = {label: {key: statistics.median(values) for key, values in row.items()} for label, row in samples.items()}
    lines = [
        f"| server | batch-1 decode tok/s | TTFT, {LONG}-token prompt | {BATCH} x ({BATCH_IN} in, {BATCH_OUT} out) output tok/s "
        "| vs llama.cpp: decode / TTFT / 16-way |",
        "|---|---|---|---|---|",
    ]
    for label, f in figures.items():
        versus = ""
        if label in RIVALS:
            t = figures[RIVALS[label]]
            ratios = (f["decode"] / t["decode"], t["ttft"] / f["ttft"], f["batch"] / t["batch"])
            versus = " / ".join(f"{r:.2f}x" for r in ratios) + f" ({RIVALS[label]})"
        lines.append(f"| {label} | {f['decode']:.1f} | {f['ttft'] * 1e3:.0f} ms | {f['batch']:.1f} | {versus} |")
    lines += [
        "",
        f"preset {args.preset}, {args.threads} threads, median of {args.rounds} rounds; a TTFT ratio > 1: the engine is faster",
    ]
    for on, off in (("engine float32", F32_OFF), ("engine int8, LM head too", INT8_OFF)):
        for key in ("decode", "batch"):
            paired = statistics.median(a / b for a, b in zip(samples[on][key], samples[off][key], strict=True))
            lines.append(f"{on} against {off}, {key}, paired by round: {paired:.2f}x")
    print("\n".join([*lines, *footer("loadtest.bench_llama_cpp")]))


if __name__ == "__main__":
    main()
