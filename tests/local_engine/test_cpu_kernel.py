"""The C++ paged decode kernel against the torch reference it replaces on the CPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from backends.local_engine import cpu_kernels
from backends.local_engine.attention import AttentionMetadata, Workspace, _decode_rows
from backends.local_engine.cpu_kernels import PackedLinear, decode_kernel

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler on this machine")


def reference(q, k_cache, v_cache, tables, lens, scale, window):  # type: ignore[no-untyped-def]
    workspace = Workspace(tuple(k_cache.shape[1:]), torch.float32, k_cache.device)
    workspace.reserve(tables.numel())
    meta = AttentionMetadata(torch.zeros(1, dtype=torch.long), len(q), tables, lens, [], workspace, window)
    return _decode_rows(q.float(), k_cache.float(), v_cache.float(), tables, lens, meta, scale)


@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim", "dtype", "window", "cache_dtype"),
    [
        (12, 4, 64, torch.float32, None, None),  # the benchmark's shapes: grouped-query attention
        (14, 2, 64, torch.float32, 40, None),  # Qwen2.5-0.5B's heads, a sliding window shorter than most contexts
        (4, 4, 128, torch.float32, None, None),  # no grouping, the other compiled head size
        (4, 2, 16, torch.float32, None, None),  # a head size with no specialisation: the generic loop
        (8, 2, 64, torch.bfloat16, None, None),
        (8, 2, 64, torch.float16, 7, None),
        (12, 4, 64, torch.float32, None, torch.float16),  # a float16 cache under a float32 model
        (14, 2, 128, torch.float32, 40, torch.bfloat16),
        (4, 2, 16, torch.float32, None, torch.float16),  # no specialisation: through the cache's type
    ],
)
def test_kernel_matches_the_torch_reference(
    heads: int, kv_heads: int, dim: int, dtype: torch.dtype, window: int | None, cache_dtype: torch.dtype | None
) -> None:
    kernel = decode_kernel(wait=True)
    assert kernel is not None, "a C++ compiler is present, yet the kernel did not build (see the warning)"
    gen = torch.Generator().manual_seed(heads * dim)
    block_size, blocks = 16, 120
    # Context lengths on and around block boundaries, one key only, and long ones.
    lens = torch.tensor([1, 15, 16, 17, 32, 33, 100, 255, 256, 300])
    width = int((lens + block_size - 1).div(block_size, rounding_mode="floor").max())
    ids = (torch.randperm(blocks - 1, generator=gen) + 1).tolist()  # scattered; block 0 stays padding, as in the runner
    tables = torch.zeros((len(lens), width), dtype=torch.long)
    for row, n in enumerate(lens.tolist()):
        count = -(-n // block_size)
        tables[row, :count] = torch.tensor(ids[:count])
        del ids[:count]
    k_cache = torch.randn((blocks, block_size, kv_heads, dim), generator=gen).to(cache_dtype or dtype)
    v_cache = torch.randn((blocks, block_size, kv_heads, dim), generator=gen).to(cache_dtype or dtype)
    q = torch.randn((len(lens), heads, dim), generator=gen).to(dtype)
    scale = dim**-0.5

    ours = kernel(q, k_cache, v_cache, tables, lens, scale, window or 0)
    assert ours.dtype == dtype and ours.shape == q.shape
    expected = reference(q, k_cache, v_cache, tables, lens, scale, window)  # in float32 from the cache's values
    # In float32 from the cache's values, except where no AVX-512 kernel takes a narrow cache: in its type
    avx512 = dim in (64, 128) and cpu_kernels.f32_panels_kernel() is not None
    tolerance = 1e-5 if dtype == torch.float32 and (cache_dtype is None or avx512) else 1e-2
    torch.testing.assert_close(ours.float(), expected, atol=tolerance, rtol=tolerance)


def test_kernel_reads_only_the_blocks_of_each_context() -> None:
    """NaNs in every block a table does not name for a position below the length never reach the output."""
    kernel = decode_kernel(wait=True)
    assert kernel is not None
    k_cache = torch.full((8, 4, 1, 8), float("nan"))
    v_cache = torch.full((8, 4, 1, 8), float("nan"))
    k_cache[3], v_cache[3] = torch.randn(4, 1, 8), torch.randn(4, 1, 8)
    k_cache[5, :2], v_cache[5, :2] = torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    q = torch.randn(1, 2, 8)
    out = kernel(q, k_cache, v_cache, torch.tensor([[3, 5, 0]]), torch.tensor([6]), 0.35, 0)
    assert torch.isfinite(out).all()
    keys = torch.cat([k_cache[3], k_cache[5, :2]])[:, 0]  # [6, 8]
    values = torch.cat([v_cache[3], v_cache[5, :2]])[:, 0]
    expected = torch.softmax(q[0] @ keys.T * 0.35, dim=-1) @ values
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)


def test_bad_inputs_are_refused_with_a_message() -> None:
    kernel = decode_kernel(wait=True)
    assert kernel is not None
    cache = torch.zeros(4, 16, 2, 8)
    with pytest.raises(RuntimeError, match="share a dtype"):
        kernel(
            torch.zeros(1, 4, 8, dtype=torch.float64),
            cache,
            cache,
            torch.zeros(1, 1, dtype=torch.long),
            torch.ones(1, dtype=torch.long),
            1.0,
            0,
        )
    with pytest.raises(RuntimeError, match="contiguous"):
        strided = torch.zeros(4, 16, 2, 16)[..., ::2]
        kernel(
            torch.zeros(1, 4, 8), strided, strided, torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long), 1.0, 0
        )
    with pytest.raises(RuntimeError, match="outside the cache"):
        kernel(torch.zeros(1, 4, 8), cache, cache, torch.tensor([[4]]), torch.ones(1, dtype=torch.long), 1.0, 0)
    with pytest.raises(RuntimeError, match="context length 17"):
        kernel(torch.zeros(1, 4, 8), cache, cache, torch.tensor([[1]]), torch.tensor([17]), 1.0, 0)


@pytest.mark.timeout(60)
def test_a_build_killed_midway_does_not_leave_later_ones_waiting() -> None:
    """torch's build lock left by a process killed while compiling: the next load goes ahead."""
    assert decode_kernel(wait=True) is not None
    module = cpu_kernels.load_extension()
    stale = Path(module.__file__).parent / "lock"
    stale.touch()  # as a killed build leaves it
    assert cpu_kernels.load_extension().paged_decode is not None
    assert not stale.exists()


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 16, 17, 40])
@pytest.mark.parametrize("in_features", [768, 100])  # 100: a tail shorter than a vector
def test_packed_linear_matches_float64_on_both_of_its_paths(rows: int, in_features: int) -> None:
    """Up to 16 rows go to the panel kernel (the weight in panels of 16 output channels; 300 leaves
    the last panel part empty), more to oneDNN (reordered weight): both are the layer's math, with a
    bias, through a leading batch dimension."""
    decode_kernel(wait=True)
    gen = torch.Generator().manual_seed(rows * in_features)
    linear = torch.nn.Linear(in_features, 300, bias=True)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(300, in_features, generator=gen))
        linear.bias.copy_(torch.randn(300, generator=gen))
    try:
        layer = PackedLinear(linear)
    except RuntimeError as exc:
        pytest.skip(f"no oneDNN linear in this build of torch ({exc})")
    x = torch.randn(1, rows, in_features, generator=gen)
    want = x.double() @ linear.weight.double().T + linear.bias.double()
    got = layer(x)
    assert got.shape == (1, rows, 300) and got.dtype == torch.float32
    assert ((got.double() - want).abs().max() / want.abs().max()).item() < 1e-5
    kernels = cpu_kernels.f32_panels_kernel()
    if kernels is not None and rows <= cpu_kernels.F32_PANEL_MAX_ROWS:  # the panels served it, bit for bit
        assert layer.weight is None and layer.panels is not None  # the plain copy was let go
        direct = kernels.f32_panel_mm(x.view(rows, in_features), kernels.f32_pack_panels(linear.weight.detach()), 300)
        assert torch.equal(got.view(rows, 300), direct + linear.bias)


CHECKPOINTS = {"qwen2": {"tie_word_embeddings": True}, "mistral": {"sliding_window": 8}}
"""Qwen2: q/k/v biases, tied embeddings; Mistral: a sliding window shorter than the prompts."""


@pytest.mark.parametrize(
    ("kind", "quantization", "rows", "fused", "small_rows", "kv_cache_dtype"),
    [("qwen2", "none", 1, True, None, "auto"), ("mistral", "none", 2, True, None, "auto"),
     ("qwen2", "none", 5, True, None, "auto"), ("mistral", "none", 5, True, 2, "auto"), ("mistral", "none", 17, False, None, "auto"),
     ("mistral", "int8", 1, True, None, "auto"), ("qwen2", "int8", 12, True, None, "auto"),
     ("mistral", "int8", 12, True, 8, "auto"), ("qwen2", "int8", 17, False, None, "auto"),
     ("qwen2", "int4", 1, True, None, "auto"), ("mistral", "int4", 6, True, None, "auto"),
     ("qwen2", "none", 3, True, None, "float16"), ("mistral", "none", 2, True, None, "bfloat16"),
     ("mistral", "int8", 4, True, None, "float16")],
)  # fmt: skip
def test_a_decode_step_in_one_call_per_layer_equals_the_modules(
    tmp_path: Path,
    llama_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    quantization: str,
    rows: int,
    fused: bool,
    small_rows: int | None,
    kv_cache_dtype: str,
) -> None:
    """Each decode step's scores with the one-call decoder layer and module by module: the same
    tokens, and scores equal to float rounding, whether its linears run on the small-row kernels
    (float32 panels: up to `cpu_kernels.F32_PANEL_MAX_ROWS`, here lowered once to 2; the int8 GEMV: up
    to `quant.W8A8_MAX_ROWS`, here lowered once to 8) or on oneDNN's and PyTorch's kernels as the
    modules' do, and with a float16 or bfloat16 cache under the float32
    model; it runs exactly where the step has decode rows only, up to
    `cpu_kernels.DECODE_LAYER_MAX_ROWS` (16)."""
    from backends.local_engine import quant
    from tests.local_engine.conftest import engine, hf_checkpoint

    if cpu_kernels.decode_layer_kernel() is None or (quantization == "int8" and cpu_kernels.w8a8_kernel() is None):
        pytest.skip("the CPU kernels are not built here, or this CPU lacks the GEMV's instructions")
    folder = hf_checkpoint(tmp_path, llama_dir, kind, **CHECKPOINTS[kind])
    if small_rows is not None:
        monkeypatch.setattr(
            *((quant, "W8A8_MAX_ROWS") if quantization == "int8" else (cpu_kernels, "F32_PANEL_MAX_ROWS")), small_rows
        )
    group = {"quant_group_size": 64} if quantization == "int4" else {}  # the tiny model's hidden size
    eng = engine(
        folder,
        quantization=quantization,
        quantize_lm_head=True,
        enable_prefix_caching=False,
        kv_cache_dtype=kv_cache_dtype,
        **group,
    )
    calls, kernel = [], cpu_kernels._layer
    scores: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    run = eng.runner.run

    def recording(batch):  # type: ignore[no-untyped-def]
        out = run(batch)
        scores[cpu_kernels.FUSE_DECODE_LAYERS].append(out.clone())
        return out

    def counting(*args):  # type: ignore[no-untyped-def]
        calls.append(args[0].shape[0])
        return kernel(*args)

    from backends.local_engine.sampling import SamplingParams

    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    prompts = [[1000 + (i * 7919 + j * 31) % 20000 for j in range(11 + i)] for i in range(rows)]
    try:
        eng.runner.run, cpu_kernels._layer = recording, counting
        tokens = {}
        for fuse in (True, False):
            cpu_kernels.FUSE_DECODE_LAYERS = fuse
            tokens[fuse] = eng.generate(prompts, greedy)
    finally:
        cpu_kernels.FUSE_DECODE_LAYERS, cpu_kernels._layer = True, kernel
    assert tokens[True] == tokens[False]
    assert len(scores[True]) == len(scores[False])
    for a, b in zip(scores[True], scores[False], strict=True):
        # int8, int4: activations are rounded to int8 (GEMV) or bf16, where float rounding may move a score by an ulp
        assert ((a - b).abs().max() / b.abs().max()).item() < (1e-5 if quantization == "none" else 1e-2)
    assert (len(calls) > 0) == fused and all(n == rows for n in calls)


@pytest.mark.parametrize("rows", [1, 5, 300])
@pytest.mark.parametrize("size", [64, 100])  # 100: a tail shorter than a vector
def test_the_elementwise_kernels_equal_the_modules_math(rows: int, size: int) -> None:
    """RMSNorm, rotary in place on a fused q/k/v output, and silu(gate) * up: the float32 kernels
    that the model's modules call on the CPU, against torch's ops in float64."""
    decode_kernel(wait=True)
    kernels = cpu_kernels.elementwise(torch.zeros(1))
    if kernels is None:
        pytest.skip("the CPU kernels are not built here")
    gen = torch.Generator().manual_seed(rows * size)
    x, weight = torch.randn(rows, size, generator=gen) * 3, torch.randn(size, generator=gen)
    want = weight.double() * x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(kernels.rms_norm(x, weight, 1e-6).double(), want, rtol=1e-5, atol=1e-5)

    heads, kv_heads, dim = 3, 1, 8
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * dim, generator=gen)
    angles = torch.rand(rows, dim // 2, generator=gen) * 6.3
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    parts = qkv.double().view(rows, heads + 2 * kv_heads, dim)
    halves = torch.cat((-parts[..., dim // 2 :], parts[..., : dim // 2]), -1)
    rotated = parts * cos.double()[:, None] + halves * sin.double()[:, None]
    rotated[:, heads + kv_heads :] = parts[:, heads + kv_heads :]  # v is left as it is
    kernels.rotary_(qkv, cos, sin, heads, kv_heads)
    torch.testing.assert_close(qkv.double().view_as(rotated), rotated, rtol=1e-5, atol=1e-5)

    gate_up = torch.randn(rows, 2 * size, generator=gen) * 4
    gate, up = gate_up.double().chunk(2, -1)
    torch.testing.assert_close(kernels.silu_mul(gate_up).double(), torch.nn.functional.silu(gate) * up, rtol=1e-5, atol=1e-6)
