"""Command line: `python -m backends.local_engine serve --model DIR` and `... build-tiny DIR`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.local_engine.engine import EngineSettings


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "build-tiny":
        from backends.local_engine.tiny import build as build_tiny

        print(build_tiny(args.folder, args.preset, args.seed))
        return 0
    return _serve(args)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backends.local_engine", description="The bundled inference engine.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a checkpoint folder over an OpenAI-compatible API")
    serve.add_argument("--model", required=True, help="checkpoint folder, or tiny / tiny:PRESET for a built random model")
    serve.add_argument("--served-model-name", default=None, help="the model name clients send (default: the folder's name)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8100)
    serve.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    serve.add_argument("--device", default="auto")
    serve.add_argument("--kv-memory-fraction", type=float, default=0.5)
    serve.add_argument("--num-kv-blocks", type=int, default=None)
    serve.add_argument("--block-size", type=int, default=16)
    serve.add_argument("--max-num-batched-tokens", type=int, default=2048)
    serve.add_argument("--max-num-seqs", type=int, default=128)
    serve.add_argument("--max-model-len", type=int, default=None)
    serve.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "float16", "bfloat16", "fp8"],
                       help="float16/bfloat16: half of float32's memory; fp8: e4m3, half of bf16's")  # fmt: skip
    serve.add_argument("--quantization", default="none", choices=["none", "int8", "int4"], help="weight-only, at load")
    serve.add_argument("--quant-group-size", type=int, default=128, help="int4: input channels per scale (128 or 64)")
    serve.add_argument("--quant-asym", action="store_true", help="int4: a zero point per group")
    serve.add_argument("--quantize-lm-head", action="store_true")
    serve.add_argument("--no-prefix-caching", action="store_true")
    serve.add_argument("--no-chunked-prefill", action="store_true")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    build = commands.add_parser("build-tiny", help="write a random-weight Llama checkpoint (tests, benchmarks, the demo)")
    build.add_argument("folder")
    build.add_argument("--preset", default="tiny")
    build.add_argument("--seed", type=int, default=0)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from backends.local_engine.engine import LLMEngine
    from backends.local_engine.errors import LoadError
    from backends.local_engine.server import EngineServer
    from backends.local_engine.tiny import cached

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = args.model
    if model == "tiny" or model.startswith("tiny:"):
        model = str(cached(model.partition(":")[2] or "tiny"))
    try:
        engine = LLMEngine(settings_from(args, model))
    except (LoadError, ValueError) as exc:
        print(f"cannot serve {args.model}: {exc}", file=sys.stderr)
        return 2
    name = args.served_model_name or (args.model if args.model.startswith("tiny") else Path(model).name)
    app = EngineServer(engine, name)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=5)
    return 0


def settings_from(args: argparse.Namespace, model: str) -> EngineSettings:
    from backends.local_engine.engine import EngineSettings

    return EngineSettings(
        model=model,
        dtype=args.dtype,
        device=args.device,
        block_size=args.block_size,
        kv_memory_fraction=args.kv_memory_fraction,
        num_kv_blocks=args.num_kv_blocks,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        enable_prefix_caching=not args.no_prefix_caching,
        enable_chunked_prefill=not args.no_chunked_prefill,
        kv_cache_dtype=args.kv_cache_dtype,
        quantization=args.quantization,
        quant_group_size=args.quant_group_size,
        quant_symmetric=not args.quant_asym,
        quantize_lm_head=args.quantize_lm_head,
    )


if __name__ == "__main__":
    sys.exit(main())
