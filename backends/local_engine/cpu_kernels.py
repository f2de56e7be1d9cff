"""The engine's CPU kernels: oneDNN linear layers with prepacked weights, and C++ kernels
(`csrc/paged_decode.cpp`) compiled on first use: paged decode attention, on CPUs with AVX-512 the
float32 matmul for up to 16 rows over weights packed in panels (`f32_panels_kernel`), and on CPUs
with AVX-512 VNNI the int8 decode GEMV
(`w8a8_kernel`; int8 activations per 64 values, as llama.cpp's q8_0). `LOCAL_ENGINE_CPU_KERNELS=0`
turns them all off (the plain torch path, for comparison or as a way out).

Linear layers: PyTorch runs a float32 `nn.Linear` on MKL's sgemm, which repacks the weight on
every call; oneDNN's matmul reads a weight reordered once, at load, into its blocked layout. On this
project's 2-core VM that ran 1.2-2.5x faster for the benchmark model's shapes (1 to 2048 rows, ad
hoc; loadtest/RESULTS.md). The results differ from sgemm's by float rounding (another summation
order). For a decode step's few rows (up to `F32_PANEL_MAX_ROWS`) each weight is used once per row
and the step is as much a stream of weights from memory as arithmetic; oneDNN did the two one after
the other (one row: its blocked weight read at about half the memory bandwidth). So a `PackedLinear`
also keeps the weight in panels of 16 output channels, read front to back and asked for ahead while
the FMAs run: float32 weights take twice their size in memory on this path (int8 and int4 layers
keep one copy; an LM head tied to the embeddings adds its panels to the embedding matrix).

Decode attention: the torch reference of `attention.py` copies each decode sequence's K/V blocks
into one tensor and reads it again; the kernel reads them in place, once. It is built with the
machine's C++ compiler through `torch.utils.cpp_extension` (ninja), in a background thread so that
an engine starts serving at once (on the torch path until the build is done), and cached under
`TORCH_EXTENSIONS_DIR` (default `~/.cache/torch_extensions`) by a name made of the source's hash
and the CPU's instruction-set flags: a cache shared between machines never hands one a binary
built for another's instructions. No compiler or a failed build: the torch path, with one warning.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger("local_engine.cpu_kernels")
SOURCE = Path(__file__).with_name("csrc") / "paged_decode.cpp"

DecodeKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, int], torch.Tensor]
"""(q, k_cache, v_cache, block_tables, context_lens, scale, window or 0) -> out."""

_lock = threading.Lock()
_built = threading.Event()
_started = False
_kernel: DecodeKernel | None = None
_w8a8: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
_f32 = False
_layer: Callable[..., None] | None = None
_module: Any = None

FUSE_DECODE_LAYERS = True
"""Run each decoder layer of a CPU decode step in one call (`decode_layer_kernel`) where it applies;
False: module by module (benchmarks compare the two)."""
DECODE_LAYER_MAX_ROWS = 16
"""The most decode rows a step runs through the one-call layer (more: module by module). Ad hoc, a
float32 step of the 100m preset: 16 rows 1.11x faster than module by module, 32 rows 1.01x (its
elementwise loops run on one thread)."""

F32_PANEL_MAX_ROWS = 16
"""Up to this many rows (the kernel's limit) a `PackedLinear` runs on the panels once the kernels
are built; more go to oneDNN. Ad hoc, all the 100m preset's linears and its LM head, one process,
medians of 3: 1 row 13.9 ms against oneDNN's 20.2 (the float32 GEMV this replaced: 14.0), 8 rows
13.4 against 20.0, 16 rows 21.8 against 24.8 (before the kernel read 11 rows and more transposed:
20.0 to 15.9 ms in another run)."""


def enabled() -> bool:
    return os.environ.get("LOCAL_ENGINE_CPU_KERNELS", "1") != "0"


class PackedLinear(nn.Module):
    """A float32 linear layer on oneDNN, its weight reordered once into oneDNN's layout, and for up to
    `F32_PANEL_MAX_ROWS` rows on the panel kernel, its weight packed in panels once the kernels are
    built (the plain weight is let go then)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight: torch.Tensor | None = linear.weight.detach().contiguous()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, None)
        self.panels: torch.Tensor | None = None
        self.bias = linear.bias

    def panel_weight(self) -> torch.Tensor | None:
        """The weight in panels, packed at the first call after the kernels are built; None before,
        or on a CPU without AVX-512."""
        if self.panels is None and (module := f32_panels_kernel()) is not None:
            assert self.weight is not None
            self.panels, self.weight = module.f32_pack_panels(self.weight), None
        return self.panels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if 0 < rows <= F32_PANEL_MAX_ROWS and (panels := self.panel_weight()) is not None:
            y: torch.Tensor = f32_panels_kernel().f32_panel_mm(x.reshape(rows, self.in_features), panels, self.out_features)
            y = y if self.bias is None else y + self.bias
            return y.view(*x.shape[:-1], self.out_features)
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")
        return out

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, oneDNN"


def pack_linears(model: nn.Module) -> int:
    """Put a `PackedLinear` in place of every float32 `nn.Linear` of a CPU model; how many. Nothing
    when oneDNN is missing, the kernels are turned off, or a first layer fails to pack."""
    if not enabled() or not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return 0
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.float32 and child.weight.device.type == "cpu":
                try:
                    setattr(module, name, PackedLinear(child))
                except RuntimeError as exc:  # an op this build of torch lacks: the plain layers serve
                    log.warning("oneDNN linear layers unavailable (%s); using torch's", exc)
                    return count
                count += 1
    return count


def decode_kernel(wait: bool = False) -> DecodeKernel | None:
    """The kernel when it is built; the first call starts the build. `wait`: block until the build
    has finished (or failed)."""
    global _started
    if not _started:
        with _lock:
            if not _started:
                _started = True
                if not enabled():
                    _built.set()
                else:
                    threading.Thread(target=_build, name="cpu-kernel-build", daemon=True).start()
    if wait:
        _built.wait()
    return _kernel


def w8a8_kernel() -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """(x [rows, in] float32, codes [out, in] int8, scale [out] float32) -> [rows, out]: the int8
    decode GEMV on AVX-512 VNNI, once built (None before, or on a CPU without VNNI)."""
    decode_kernel()  # starts the build
    return _w8a8


def f32_panels_kernel() -> Any:
    """The extension, for `f32_pack_panels` (w [out, in] -> panels) and `f32_panel_mm` (x [rows <= 16,
    in], panels, out -> [rows, out]), once built on a CPU with AVX-512 (None before, or without)."""
    decode_kernel()  # starts the build
    return _module if _f32 else None


def decode_layer_kernel() -> Callable[..., None] | None:
    """A whole decoder layer for a decode step in one call (`csrc/paged_decode.cpp`: `decode_layer`),
    once built; model.CausalLM decides where it applies."""
    decode_kernel()  # starts the build
    return _layer


def elementwise(x: torch.Tensor) -> Any:
    """The extension's elementwise kernels (`rms_norm`, `rotary_`, `silu_mul`: float32, rows spread
    over the threads, one pass over memory where torch makes two or three) for a float32 CPU tensor,
    once built; None otherwise, and the model uses torch's ops."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return None
    decode_kernel()  # starts the build
    return _module


def _build() -> None:
    global _kernel, _w8a8, _f32, _layer, _module
    try:
        module = load_extension()
        _kernel, _layer, _module = module.paged_decode, module.decode_layer, module
        _f32 = module.f32_panels_available()
        if module.w8a8_available():
            _w8a8 = module.w8a8_gemv
        small = [name for name, ready in (("float32 panels", _f32), ("int8 GEMV (VNNI)", _w8a8 is not None)) if ready]
        log.info("CPU paged decode kernel ready%s", f"; small-row kernels: {', '.join(small)}" if small else "")
    except Exception as exc:  # no compiler, no ninja, a failed build: the torch path serves
        log.warning("CPU paged decode kernel unavailable (%s: %s); decode attention uses the torch path",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")  # fmt: skip
    finally:
        _built.set()


def load_extension() -> Any:
    """Build (or find built) and import the extension module. One process builds at a time, under
    an flock the OS releases when its holder dies; torch's own lock file, which a process killed
    mid-build leaves behind and every later build would wait on forever, is removed under it."""
    from torch.utils.cpp_extension import get_default_build_root, load

    _ninja_on_path()
    name = f"local_engine_paged_decode_{_build_key()}"
    directory = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "build.flock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        (directory / "lock").unlink(missing_ok=True)
        return load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
            verbose=False,
        )


def _ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the PyPI package's binary sits beside the interpreter of a
    virtual environment that need not be on PATH."""
    try:
        import ninja
    except ImportError:
        return
    directory = str(ninja.BIN_DIR)
    if directory not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = directory + os.pathsep + os.environ.get("PATH", "")


def _build_key() -> str:
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(torch.__version__.encode())
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    digest.update(flags.encode())
    return digest.hexdigest()[:12]
