"""Weight-only quantization on CPU: the kernels against float64 references on fresh random inputs
(outputs poisoned first), the quantizers' error bounds, AWQ and GPTQ packed layouts, checkpoints
stored quantized, and whole models whose greedy tokens must follow the float32 model's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from backends.local_engine import cpu_kernels
from backends.local_engine.errors import LoadError
from backends.local_engine.loader import Checkpoint, load_model
from backends.local_engine.quant import (
    AWQ_ORDER,
    Int4Weight,
    QuantConfig,
    QuantLinear,
    dequantize,
    from_awq,
    from_gptq,
    int4_linear,
    int8_linear,
    pack_nibbles,
    quantize_int4,
    quantize_int8,
)
from backends.local_engine.sampling import SamplingParams
from tests.local_engine.conftest import engine

# Relative (Frobenius) error of a kernel against float64 math on the same quantized weight: the CPU
# kernels take bf16 activations (8 bits of mantissa), so about 2^-8 per element, less in a sum.
BF16_BOUND = 1e-2
EXACT_BOUND = 1e-5  # the dequantize-then-matmul path in float32


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_int8_kernel_against_float64(rows: int) -> None:
    gen = torch.Generator().manual_seed(rows)
    w = torch.randn(96, 256, generator=gen)
    bias = torch.randn(96, generator=gen)
    codes, scale = quantize_int8(w)
    x = torch.randn(rows, 256, generator=gen)
    want = x.double() @ dequantize(codes, scale, None, None).double().T + bias.double()
    out = torch.full((rows, 96), float("nan"))
    got = int8_linear(x, codes, scale, bias, out=out)
    assert got is out and not out.isnan().any()
    assert rel_error(out, want) < BF16_BOUND


@pytest.mark.parametrize("rows", [1, 3, 8, 40])
def test_the_int8_decode_gemv_against_float64(rows: int) -> None:
    """int8 activations per 64 values (as llama.cpp's q8_0): within 2% of exact math on the same codes."""
    cpu_kernels.decode_kernel(wait=True)
    gemv = cpu_kernels.w8a8_kernel()
    if gemv is None:
        pytest.skip("the CPU kernels are not built here, or the CPU has no AVX-512 VNNI")
    gen = torch.Generator().manual_seed(rows)
    w = torch.randn(200, 768, generator=gen)
    codes, scale = quantize_int8(w)
    x = torch.randn(rows, 768, generator=gen)
    x[:, 5] *= 30  # an outlier feature: a block's scale follows it, the other blocks keep theirs
    want = x.double() @ dequantize(codes, scale, None, None).double().T
    assert rel_error(gemv(x, codes, scale), want) < 2e-2


@pytest.mark.parametrize(("group", "symmetric"), [(128, True), (128, False), (64, True), (64, False)])
@pytest.mark.parametrize("rows", [1, 9])
def test_int4_kernel_against_float64(group: int, symmetric: bool, rows: int) -> None:
    gen = torch.Generator().manual_seed(group + rows + symmetric)
    w = torch.randn(128, 512, generator=gen)
    codes, scale, zero = quantize_int4(w, group, symmetric)
    packed = Int4Weight.build(codes, scale, zero, group)
    assert packed.packed is not None  # the CPU kernel's path
    x = torch.randn(rows, 512, generator=gen)
    want = x.double() @ dequantize(codes, scale, zero, group).double().T
    out = torch.full((rows, 128), float("nan"))
    int4_linear(x, packed, out=out)
    assert not out.isnan().any() and rel_error(out, want) < BF16_BOUND

    odd = Int4Weight.build(codes[:120], scale[:120], zero[:120], group)  # 120 rows: no packed layout
    assert odd.packed is None
    out = torch.full((rows, 120), float("nan"))
    int4_linear(x, odd, out=out)
    assert not out.isnan().any() and rel_error(out, want[:, :120]) < EXACT_BOUND


def test_quantizers_round_to_the_nearest_code() -> None:
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(3)) * 3
    codes, scale = quantize_int8(w)
    assert codes.dtype == torch.int8 and int(codes.abs().max()) <= 127
    assert bool(((w - dequantize(codes, scale, None, None)).abs() <= scale[:, None] / 2 + 1e-6).all())
    for symmetric in (True, False):
        codes4, scale4, zero4 = quantize_int4(w, 64, symmetric)
        assert int(codes4.max()) <= 15 and int(codes4.min()) >= 0
        error = (w - dequantize(codes4, scale4, zero4, 64)).abs().view(64, 4, 64)
        bound = scale4[..., None] * (0.5 if not symmetric else 1.0) + 1e-6  # symmetric clips one code at the top
        assert bool((error <= bound).all())
    with pytest.raises(ValueError):
        quantize_int4(w[:, :100], 64, True)


def gptq_tensors(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group: int) -> dict[str, torch.Tensor]:
    """A layer as AutoGPTQ (v1) stores it: weights [in, out] with nibbles along the input, zeros - 1."""
    in_features = codes.shape[1]
    return {
        "qweight": pack_nibbles(codes.T.to(torch.int32), dim=0),
        "qzeros": pack_nibbles(((zero.T.to(torch.int32) - 1) & 0xF), dim=1),
        "scales": scale.T.contiguous().to(torch.float16),
        "g_idx": (torch.arange(in_features) // group).to(torch.int32),
    }


def awq_tensors(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> dict[str, torch.Tensor]:
    """A layer as AutoAWQ's GEMM layout stores it: [in, out / 8], nibble i of a word = channel 8c + ORDER[i]."""

    def pack(values: torch.Tensor) -> torch.Tensor:  # values [rows, out]
        rows, cols = values.shape
        shuffled = values.view(rows, cols // 8, 8)[..., list(AWQ_ORDER)].reshape(rows, cols)
        return pack_nibbles(shuffled.to(torch.int32), dim=1)

    return {"qweight": pack(codes.T), "qzeros": pack(zero.T), "scales": scale.T.contiguous().to(torch.float16)}


def test_gptq_and_awq_layouts_unpack_to_the_same_codes() -> None:
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(5))
    for symmetric in (True, False):
        codes, scale, zero = quantize_int4(w, 64, symmetric)
        scale16 = scale.to(torch.float16).to(torch.float32)
        g = gptq_tensors(codes, scale, zero, 64)
        got = from_gptq(g["qweight"], g["qzeros"], g["scales"], g["g_idx"], 64)
        assert torch.equal(got[0], codes) and torch.equal(got[1], scale16) and torch.equal(got[2], zero)
        a = awq_tensors(codes, scale, zero)
        got = from_awq(a["qweight"], a["qzeros"], a["scales"])
        assert torch.equal(got[0], codes) and torch.equal(got[1], scale16) and torch.equal(got[2], zero)
    shuffled = g["g_idx"].flip(0)
    with pytest.raises(ValueError):
        from_gptq(g["qweight"], g["qzeros"], g["scales"], shuffled, 64)


def test_a_nibble_is_where_each_format_says() -> None:
    codes = torch.zeros(8, 16, dtype=torch.uint8)  # [out, in]
    codes[3, 10] = 5  # output channel 3, input channel 10
    scale, zero = torch.ones(8, 1), torch.zeros(8, 1)
    gptq = gptq_tensors(codes, scale, zero, 16)["qweight"]  # [in / 8, out]
    assert int(gptq[1, 3]) == 5 << (4 * 2)  # input 10 = word 1, nibble 2
    awq = awq_tensors(codes, scale, zero)["qweight"]  # [in, out / 8]
    assert int(awq[10, 0]) == 5 << (4 * AWQ_ORDER.index(3))


def greedy(folder: Path, **settings: object) -> list[tuple[list[int], list]]:
    eng = engine(folder, **settings)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=5)
    prompts = [[1000 + (i * 7919 + j * 31) % 20000 for j in range(12 + 5 * i)] for i in range(4)]
    for i, prompt in enumerate(prompts):
        eng.add_request(f"r{i}", prompt, params)
    tokens: dict[str, list[int]] = {}
    logprobs: dict[str, list] = {}
    while eng.has_unfinished():
        for d in eng.step():
            tokens.setdefault(d.request_id, []).extend(d.token_ids)
            logprobs.setdefault(d.request_id, []).extend(d.logprobs or [])
    return [(tokens[f"r{i}"], logprobs[f"r{i}"]) for i in range(len(prompts))]


def assert_follows(quantized: list[tuple[list[int], list]], reference: list[tuple[list[int], list]], tol: float) -> int:
    """Each sequence's tokens equal the reference's up to a first divergence where the quantized
    token is in the reference's top 5, within `tol` of its best log-probability. Returns the
    number of tokens that matched before any divergence."""
    matched = 0
    for (ours, _), (ref, ref_lp) in zip(quantized, reference, strict=True):
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            if a != b:
                top = dict(ref_lp[i].top)
                assert a in top, f"diverged at {i}: {a} is not in the reference's top 5 {list(top)}"
                assert top[b] - top[a] < tol, f"diverged at {i}: gap {top[b] - top[a]:.3f}"
                break
            matched += 1
    return matched


def rewritten(source: Path, target: Path, change) -> Path:  # type: ignore[no-untyped-def]
    """A copy of a checkpoint with each decoder linear weight replaced by `change(weight)`."""
    shutil.copytree(source, target)
    tensors = load_file(str(source / "model.safetensors"))
    for name, tensor in tensors.items():
        if name.endswith("proj.weight") and name.startswith("model.layers."):
            tensors[name] = change(tensor).contiguous()
    save_file(tensors, str(target / "model.safetensors"))
    return target


@pytest.fixture(scope="module")
def calm_dir(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its decoder layers' weights at a fifth of their size: the layers then
    refine the residual stream as a trained model's do, instead of overturning it, so the logits are
    as sensitive to 4-bit noise as a real model's rather than chaotic (the random model at full
    size turns int4's ~10% weight error into a different top 5 at once)."""
    return rewritten(llama_dir, tmp_path_factory.mktemp("calm") / "calm", lambda w: w * 0.2)


SCHEMES = [
    ({"quantization": "int8"}, QuantConfig("int8")),
    ({"quantization": "int8", "quantize_lm_head": True}, None),
    ({"quantization": "int4", "quant_group_size": 64}, QuantConfig("int4", 64)),
    ({"quantization": "int4", "quant_group_size": 32, "quant_symmetric": False}, QuantConfig("int4", 32, False)),
]
IDS = ["int8", "int8-lm-head", "int4-g64", "int4-g32-asym"]


@pytest.mark.parametrize(("settings", "_"), SCHEMES, ids=IDS)
def test_a_quantized_model_follows_the_float32_model(llama_dir: Path, calm_dir: Path, settings: dict, _: object) -> None:
    folder = llama_dir if settings["quantization"] == "int8" else calm_dir
    reference = greedy(folder)
    matched = assert_follows(greedy(folder, **settings), reference, 1.0)
    assert matched >= 24  # the first steps agree outright


def fake_quantized(weight: torch.Tensor, config: QuantConfig) -> torch.Tensor:
    if config.scheme == "int8":
        codes, scale = quantize_int8(weight)
        return dequantize(codes, scale, None, None)
    codes, scale, zero = quantize_int4(weight, config.group_size, config.symmetric)
    return dequantize(codes, scale, zero, config.group_size)


@pytest.mark.parametrize(
    ("settings", "config"), [s for s in SCHEMES if s[1] is not None], ids=[i for i, s in zip(IDS, SCHEMES, strict=True) if s[1]]
)
def test_the_kernels_in_the_model_equal_float32_math_on_the_same_codes(
    llama_dir: Path, tmp_path: Path, settings: dict, config: QuantConfig
) -> None:
    """The full-size random model, quantized, against a float32 model carrying the very weights the
    codes stand for: only the kernels' bf16 activations differ, so the tokens must agree closely."""
    reference = greedy(rewritten(llama_dir, tmp_path / "fake", lambda w: fake_quantized(w, config)))
    matched = assert_follows(greedy(llama_dir, **settings), reference, 0.5)
    assert matched >= 24


def test_every_linear_layer_is_quantized_and_smaller(llama_dir: Path) -> None:
    checkpoint = Checkpoint.open(llama_dir)
    model = load_model(checkpoint, torch.float32, torch.device("cpu"), QuantConfig("int4", 64))
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 4 * checkpoint.config.num_layers  # qkv (fused), o, gate_up (fused), down
    assert not any(isinstance(m, torch.nn.Linear) for m in model.model.modules())
    assert not isinstance(model.lm_head, QuantLinear)  # kept unless asked
    for layer in layers:
        assert layer.weight_bytes() < layer.in_features * layer.out_features  # under a byte per weight


def stored_quantized(source: Path, target: Path, method: str, group: int, symmetric: bool) -> Path:
    """The same tiny model written as an AWQ or GPTQ checkpoint, from our own quantizer's codes."""
    shutil.copytree(source, target)
    tensors = load_file(str(source / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.endswith("proj.weight") and name.startswith("model.layers."):
            prefix = name.removesuffix(".weight")
            codes, scale, zero = quantize_int4(tensor, group, symmetric)
            packed = gptq_tensors(codes, scale, zero, group) if method == "gptq" else awq_tensors(codes, scale, zero)
            out.update({f"{prefix}.{k}": v for k, v in packed.items()})
        else:
            out[name] = tensor
    (target / "model.safetensors").unlink()
    save_file(out, str(target / "model.safetensors"))
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = (
        {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": False, "sym": symmetric}
        if method == "gptq"
        else {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": not symmetric, "version": "gemm"}
    )
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize(("method", "symmetric"), [("gptq", True), ("gptq", False), ("awq", False)])
def test_awq_and_gptq_checkpoints_load_as_quantized_layers(llama_dir: Path, tmp_path: Path, method: str, symmetric: bool) -> None:
    folder = stored_quantized(llama_dir, tmp_path / method, method, 64, symmetric)
    stored = load_model(Checkpoint.open(folder), torch.float32, torch.device("cpu"))
    at_load = load_model(Checkpoint.open(llama_dir), torch.float32, torch.device("cpu"), QuantConfig("int4", 64, symmetric))
    a, b = stored.model.layers[1].mlp.down_proj, at_load.model.layers[1].mlp.down_proj
    assert isinstance(a, QuantLinear) and isinstance(b, QuantLinear)
    assert torch.equal(a.codes, b.codes)
    assert torch.allclose(a.scale, b.scale, rtol=1e-3)  # stored as float16
    reference = greedy(llama_dir, quantization="int4", quant_group_size=64, quant_symmetric=symmetric)
    assert_follows(greedy(folder), reference, 0.5)
    with pytest.raises(LoadError):  # quantizing a quantized checkpoint again is refused
        load_model(Checkpoint.open(folder), torch.float32, torch.device("cpu"), QuantConfig("int8"))


def test_unsupported_quantized_checkpoints_are_refused(llama_dir: Path, tmp_path: Path) -> None:
    for quantization in (
        {"quant_method": "bitsandbytes"},
        {"quant_method": "gptq", "bits": 8, "group_size": 128},
        {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True},
        {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"},
    ):
        folder = tmp_path / "bad"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(llama_dir, folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "quantization_config": quantization}))
        with pytest.raises(LoadError):
            Checkpoint.open(folder)
    with pytest.raises(ValueError):
        QuantConfig("int3")  # type: ignore[arg-type]


def test_the_gateways_engine_settings_reach_the_engine(tmp_path: Path) -> None:
    from backends.local_engine.__main__ import parser, settings_from
    from gateway.runtime import engine_process
    from gateway.settings import DeploymentSettings, LocalEngineSettings

    chosen = LocalEngineSettings(quantization="int4", quant_group_size=64, kv_cache_dtype="fp8")
    process = engine_process(DeploymentSettings(id="local", backend="local", engine=chosen), tmp_path)
    args = parser().parse_args(["serve", "--model", process.model, *process.flags])
    assert settings_from(args, process.model).quant() == QuantConfig("int4", 64)
    assert settings_from(args, process.model).kv_cache_dtype == "fp8"
    plain = engine_process(DeploymentSettings(id="local", backend="local"), tmp_path)
    assert settings_from(parser().parse_args(["serve", "--model", "tiny", *plain.flags]), "tiny").quant() is None


def test_an_fp8_kv_cache_halves_its_memory_and_follows_the_model(calm_dir: Path) -> None:
    """On the calm model, like int4: e4m3 keeps 3 mantissa bits, about 6% per cached value."""
    eng = engine(calm_dir, kv_cache_dtype="fp8")
    assert eng.runner.kv_cache.dtype == torch.float8_e4m3fn and eng.runner.kv_cache.element_size() == 1
    reference = greedy(calm_dir)
    matched = assert_follows(greedy(calm_dir, kv_cache_dtype="fp8"), reference, 1.0)
    assert matched >= 24
    with pytest.raises(ValueError):
        engine(calm_dir, kv_cache_dtype="fp4")


@pytest.mark.parametrize("kv_cache_dtype", ["float16", "bfloat16"])
def test_a_half_width_kv_cache_under_a_float32_model_follows_it(calm_dir: Path, kv_cache_dtype: str) -> None:
    """llama.cpp's default: a float32 model over a float16 cache. Half the cache's bytes, read by the
    C++ decode kernel (float32 math on the stored values); bfloat16 keeps 8 mantissa bits, float16 11."""
    eng = engine(calm_dir, kv_cache_dtype=kv_cache_dtype)
    full = engine(calm_dir)
    assert eng.runner.model.model.embed_tokens.weight.dtype == torch.float32
    assert eng.runner.kv_cache.dtype == getattr(torch, kv_cache_dtype)
    assert eng.runner.kv_cache.nbytes * 2 == full.runner.kv_cache.nbytes
    matched = assert_follows(greedy(calm_dir, kv_cache_dtype=kv_cache_dtype), greedy(calm_dir), 0.1)
    assert matched >= 90  # of 96; both matched all 96 here


def test_fp8_cache_writes_saturate_instead_of_overflowing() -> None:
    from backends.local_engine.attention import write_kv

    cache = torch.zeros(2, 4, 1, 8, dtype=torch.float8_e4m3fn)
    values = torch.tensor([[[1000.0, -1000.0, 1.0, 0.5, -0.25, 3.0, 100.0, 0.0]]])
    write_kv(cache, cache.clone(), values, values, torch.tensor([5]))
    stored = cache.view(-1, 1, 8)[5].float()
    assert stored.tolist() == [[448.0, -448.0, 1.0, 0.5, -0.25, 3.0, 96.0, 0.0]]  # 100 rounds to 96 in e4m3
    assert not cache.float().isnan().any()
