// Paged decode attention for the CPU: one new token per sequence attends to its K/V read in place
// through its block table. The torch reference gathers each sequence's blocks into a contiguous copy
// and reads that again (and SDPA with grouped-query attention may expand K/V per head); this reads
// every key and value once, which is what bounds decode attention: memory bandwidth.
//
// Work items are sequences, spread over ATen's thread pool. For each, every query head is scored
// against its kv head's keys, softmaxed in float32, and the values summed.

#include <torch/extension.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

// exp for x <= 0 (scores minus their maximum), branch-free so the compiler vectorises the loop:
// Cephes' single-precision range reduction and polynomial (about 1 ulp).
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.3f);
  float n = std::floor(x * 1.44269504088896341f + 0.5f);
  x = x - n * 0.693359375f + n * 2.12194440e-4f;
  float z = x * x;
  float y = ((((1.9875691500e-4f * x + 1.3981999507e-3f) * x + 8.3334519073e-3f) * x + 4.1665795894e-2f) * x +
             1.6666665459e-1f) * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

template <typename scalar_t>
inline const float* as_float(const scalar_t* src, float* buffer, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return src;
  } else {
    for (int64_t i = 0; i < n; ++i) buffer[i] = static_cast<float>(src[i]);
    return buffer;
  }
}

template <int64_t kDim>
inline float dot(const float* a, const float* b, int64_t dim) {
  const int64_t n = kDim > 0 ? kDim : dim;
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

template <int64_t kDim>
inline void axpy(float* y, float a, const float* x, int64_t dim) {
  const int64_t n = kDim > 0 ? kDim : dim;
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) y[d] += a * x[d];
}

// One sequence per work item: its blocks are read whole ([block_size, kv_heads, dim], contiguous),
// front to back, which the hardware prefetcher follows; kDim > 0 fixes the head size at compile time.
template <typename scalar_t, int64_t kDim>
void decode(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
            const torch::Tensor& tables, const torch::Tensor& lens, double scale, int64_t window, torch::Tensor& out) {
  const int64_t seqs = q.size(0), heads = q.size(1), dim = q.size(2);
  const int64_t block_size = k_cache.size(1), kv_heads = k_cache.size(2), width = tables.size(1);
  const int64_t group = heads / kv_heads;
  const int64_t row_size = kv_heads * dim;  // one token's keys (or values), all kv heads
  const scalar_t* q_data = q.data_ptr<scalar_t>();
  const scalar_t* k_data = k_cache.data_ptr<scalar_t>();
  const scalar_t* v_data = v_cache.data_ptr<scalar_t>();
  const int64_t* table_data = tables.data_ptr<int64_t>();
  const int64_t* len_data = lens.data_ptr<int64_t>();
  scalar_t* out_data = out.data_ptr<scalar_t>();
  const float fscale = static_cast<float>(scale);

  // Sequences differ in length by up to the whole context: threads take them one at a time, longest
  // first, rather than in fixed ranges.
  std::vector<int64_t> order(seqs);
  for (int64_t s = 0; s < seqs; ++s) order[s] = s;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return len_data[a] > len_data[b]; });
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<float> query(heads * dim), acc(heads * dim), scores, row(row_size);
    for (int64_t taken; (taken = next.fetch_add(1)) < seqs;) {
      const int64_t s = order[taken];
      const int64_t len = len_data[s];
      const int64_t first = window > 0 ? std::max<int64_t>(0, len - window) : 0;
      const int64_t n = len - first;
      const int64_t* table = table_data + s * width;
      // Calls visit(key index from `first`, the row's keys or values of every kv head as floats),
      // block by block through the table.
      auto each_row = [&](const scalar_t* cache, auto&& visit) {
        for (int64_t t = first; t < len;) {
          const int64_t block = t / block_size, stop = std::min(len, (block + 1) * block_size);
          const scalar_t* base = cache + (table[block] * block_size - block * block_size) * row_size;
          for (; t < stop; ++t) visit(t - first, as_float(base + t * row_size, row.data(), row_size));
        }
      };
      scores.resize(heads * n);
      const scalar_t* qs = q_data + s * heads * dim;
      for (int64_t i = 0; i < heads * dim; ++i) query[i] = static_cast<float>(qs[i]) * fscale;

      // Scores: for each key row, every query head against its kv head.
      each_row(k_data, [&](int64_t i, const float* keys) {
        for (int64_t h = 0; h < heads; ++h)
          scores[h * n + i] = dot<kDim>(query.data() + h * dim, keys + (h / group) * dim, dim);
      });
      for (int64_t h = 0; h < heads; ++h) {
        float* sh = scores.data() + h * n;
        float peak = -INFINITY;
        for (int64_t i = 0; i < n; ++i) peak = std::max(peak, sh[i]);
        float total = 0.f;
#pragma omp simd reduction(+ : total)
        for (int64_t i = 0; i < n; ++i) {
          sh[i] = exp_nonpositive(sh[i] - peak);
          total += sh[i];
        }
        const float inv = 1.f / total;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) sh[i] *= inv;
      }
      // Values, weighted.
      std::fill(acc.begin(), acc.end(), 0.f);
      each_row(v_data, [&](int64_t i, const float* values) {
        for (int64_t h = 0; h < heads; ++h)
          axpy<kDim>(acc.data() + h * dim, scores[h * n + i], values + (h / group) * dim, dim);
      });
      scalar_t* dst = out_data + s * heads * dim;
      for (int64_t i = 0; i < heads * dim; ++i) dst[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

}  // namespace

// q: [seqs, heads, dim]; k_cache, v_cache: [blocks, block_size, kv_heads, dim]; tables: [seqs, width]
// int64 block ids; lens: [seqs] int64 keys per sequence (the new token's included); window <= 0: none.
torch::Tensor paged_decode(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor tables,
                           torch::Tensor lens, double scale, int64_t window) {
  TORCH_CHECK(q.device().is_cpu() && k_cache.device().is_cpu(), "paged_decode: CPU tensors only");
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "paged_decode: bad shapes");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type() && v_cache.scalar_type() == k_cache.scalar_type(),
              "paged_decode: q and the cache must share a dtype");
  TORCH_CHECK(q.size(2) == k_cache.size(3) && q.size(1) % k_cache.size(2) == 0, "paged_decode: head shapes");
  TORCH_CHECK(tables.scalar_type() == torch::kInt64 && lens.scalar_type() == torch::kInt64, "paged_decode: int64 tables");
  TORCH_CHECK(tables.size(0) == q.size(0) && lens.size(0) == q.size(0), "paged_decode: one table per sequence");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "paged_decode: the cache must be contiguous");
  q = q.contiguous();
  tables = tables.contiguous();
  lens = lens.contiguous();
  {  // a bad table or length would read outside the cache: refuse it (O(seqs x width), next to nothing)
    const int64_t* table = tables.data_ptr<int64_t>();
    const int64_t* len = lens.data_ptr<int64_t>();
    const int64_t blocks = k_cache.size(0), capacity = tables.size(1) * k_cache.size(1);
    for (int64_t s = 0; s < lens.size(0); ++s)
      TORCH_CHECK(len[s] >= 1 && len[s] <= capacity, "paged_decode: context length ", len[s], " outside 1..", capacity);
    for (int64_t i = 0; i < tables.numel(); ++i)
      TORCH_CHECK(table[i] >= 0 && table[i] < blocks, "paged_decode: block id ", table[i], " outside the cache");
  }
  auto out = torch::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "paged_decode", [&] {
    if (q.size(2) == 64) {
      decode<scalar_t, 64>(q, k_cache, v_cache, tables, lens, scale, window, out);
    } else if (q.size(2) == 128) {
      decode<scalar_t, 128>(q, k_cache, v_cache, tables, lens, scale, window, out);
    } else {
      decode<scalar_t, 0>(q, k_cache, v_cache, tables, lens, scale, window, out);
    }
  });
  return out;
}

// --- int8 weights, int8 activations: the decode GEMV --------------------------------------------
//
// y[m, n] = scale[n] * sum_k x[m, k] * w[n, k] for a few rows m (decode), w int8 per output channel.
// x is quantized to int8 per 64-wide block (one scale each, as llama.cpp's q8_0 quantizes activations
// per 32), so the products run on AVX-512 VNNI: dpbusd multiplies unsigned by signed bytes, so |x|
// goes in unsigned and x's sign moves onto w. Reads each weight byte once per row of x.

bool w8a8_available() {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  return true;
#else
  return false;
#endif
}

torch::Tensor w8a8_gemv(torch::Tensor x, torch::Tensor w, torch::Tensor scale) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  TORCH_CHECK(x.dtype() == torch::kFloat32 && w.dtype() == torch::kInt8 && scale.dtype() == torch::kFloat32,
              "w8a8_gemv: float32 x, int8 w, float32 scale");
  x = x.contiguous();
  TORCH_CHECK(w.is_contiguous() && scale.is_contiguous(), "w8a8_gemv: contiguous w and scale");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  TORCH_CHECK(K % 64 == 0 && w.size(1) == K && scale.size(0) == N, "w8a8_gemv: shapes");
  const int64_t B = K / 64;
  std::vector<uint8_t> mag(M * K);
  std::vector<uint64_t> neg(M * B);
  std::vector<float> xs(M * B);
  const float* xp = x.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b = 0; b < B; ++b) {
      const float* blk = xp + m * K + b * 64;
      float amax = 0.f;
      for (int i = 0; i < 64; ++i) amax = std::max(amax, std::fabs(blk[i]));
      const float s = amax / 127.f, inv = s > 0.f ? 1.f / s : 0.f;
      xs[m * B + b] = s;
      uint64_t mask = 0;
      for (int i = 0; i < 64; ++i) {
        const int q = static_cast<int>(std::nearbyint(blk[i] * inv));
        mag[m * K + b * 64 + i] = static_cast<uint8_t>(q < 0 ? -q : q);
        if (q < 0) mask |= uint64_t{1} << i;
      }
      neg[m * B + b] = mask;
    }
  }
  auto out = torch::empty({M, N}, x.options());
  float* op = out.data_ptr<float>();
  const int8_t* wp = w.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    const __m512i zero = _mm512_setzero_si512();
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* wr = wp + n * K;
      for (int64_t m = 0; m < M; ++m) {
        __m512 acc = _mm512_setzero_ps();
        for (int64_t b = 0; b < B; ++b) {
          const __m512i wv = _mm512_loadu_si512(wr + b * 64);
          const __m512i xv = _mm512_loadu_si512(mag.data() + m * K + b * 64);
          const __m512i sv = _mm512_mask_sub_epi8(wv, static_cast<__mmask64>(neg[m * B + b]), zero, wv);
          const __m512i dot = _mm512_dpbusd_epi32(zero, xv, sv);
          acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(xs[m * B + b]), acc);
        }
        op[m * N + n] = _mm512_reduce_add_ps(acc) * sp[n];
      }
    }
  });
  return out;
#else
  TORCH_CHECK(false, "w8a8_gemv: built without AVX-512 VNNI");
  return x;
#endif
}

// --- float32 weights: the decode GEMV -------------------------------------------------------------
//
// y[m, n] = sum_k x[m, k] * w[n, k] for one or two rows (batch-1 decode), w float32 [out, in] as
// nn.Linear keeps it. oneDNN's matmul for one row reads its blocked weight at about half the
// machine's memory bandwidth (the decode sequence of the 100m preset's linears, ad hoc: 14.0 ms against
// this kernel's 8.6); here each weight row is read once, start to end, against the rows of x in L1,
// and the rows of w are spread over ATen's threads.

bool f32_gemv_available() {
#if defined(__AVX512F__)
  return true;
#else
  return false;
#endif
}

#if defined(__AVX512F__)
namespace {
template <int MR>
inline void f32_row(const float* x, int64_t K, const float* w, float* y, int64_t ldy) {
  __m512 a[MR], b[MR];
  for (int m = 0; m < MR; ++m) a[m] = b[m] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512 w0 = _mm512_loadu_ps(w + k), w1 = _mm512_loadu_ps(w + k + 16);
    for (int m = 0; m < MR; ++m) {
      a[m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + m * K + k), w0, a[m]);
      b[m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + m * K + k + 16), w1, b[m]);
    }
  }
  for (; k < K; k += 16) {  // the tail, 1 to 31 values, masked
    const __mmask16 mask = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
    const __m512 w0 = _mm512_maskz_loadu_ps(mask, w + k);
    for (int m = 0; m < MR; ++m) a[m] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x + m * K + k), w0, a[m]);
  }
  for (int m = 0; m < MR; ++m) y[m * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(a[m], b[m]));
}
}  // namespace
#endif

torch::Tensor f32_gemv(torch::Tensor x, torch::Tensor w) {
#if defined(__AVX512F__)
  TORCH_CHECK(x.dtype() == torch::kFloat32 && w.dtype() == torch::kFloat32, "f32_gemv: float32 x and w");
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "f32_gemv: shapes");
  TORCH_CHECK(w.is_contiguous(), "f32_gemv: contiguous w");
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto out = torch::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      int64_t m = 0;
      for (; m + 4 <= M; m += 4) f32_row<4>(xp + m * K, K, wp + n * K, op + m * N + n, N);
      switch (M - m) {
        case 3: f32_row<3>(xp + m * K, K, wp + n * K, op + m * N + n, N); break;
        case 2: f32_row<2>(xp + m * K, K, wp + n * K, op + m * N + n, N); break;
        case 1: f32_row<1>(xp + m * K, K, wp + n * K, op + m * N + n, N); break;
        default: break;
      }
    }
  });
  return out;
#else
  TORCH_CHECK(false, "f32_gemv: built without AVX-512");
  return x;
#endif
}

// --- one decoder layer for a decode step ----------------------------------------------------------
//
// At batch 1 a decode step of a small model is mostly the cost of calling ops, not of doing them: the
// elementwise work of a layer (two RMSNorms, rotary, the KV write, SiLU, two residual adds) is a few
// thousand floats, spread over some 30 torch ops and a dozen module calls. This runs a whole
// Llama-family layer in one call: the same math as model.DecoderLayer (transformers' order of
// operations, float32 throughout). A linear is (weight, scale, bias, other): a float32 weight with an
// empty scale and, as `other`, oneDNN's reordered copy of it; int8 codes with
// float32 scales per output channel and, as `other`, the scales in bf16; or int4 codes packed for
// PyTorch's int4 kernel (uint8) with its bf16 scales and offsets. Up to `gemv_rows` rows go to the
// decode GEMVs above, more to oneDNN's matmul (float32) or PyTorch's int8 kernel (bf16 activations),
// as the modules would; int4 always to PyTorch's int4 kernel. An empty bias is none.

namespace {
torch::Tensor onednn_linear(const torch::Tensor& x, const torch::Tensor& packed) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                         c10::string_view, torch::List<std::optional<at::Scalar>>,
                                         std::optional<c10::string_view>)>();
  return op.call(x, packed, std::nullopt, "none", torch::List<std::optional<at::Scalar>>(), std::nullopt);
}

torch::Tensor decode_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& scale, const torch::Tensor& bias,
                            const torch::Tensor& other, int64_t gemv_rows) {
  const bool gemv = x.size(0) <= gemv_rows;
  torch::Tensor y;
  if (w.scalar_type() == torch::kInt8) {
    y = gemv ? w8a8_gemv(x, w, scale) : at::_weight_int8pack_mm(x.to(torch::kBFloat16), w, other).to(torch::kFloat32);
  } else if (w.scalar_type() == torch::kUInt8) {  // int4, packed for PyTorch's kernel; scale: [groups, out, 2] bf16
    const int64_t group = x.size(1) / scale.size(0);
    y = at::_weight_int4pack_mm_for_cpu(x.to(torch::kBFloat16), w, group, scale).to(torch::kFloat32);
  } else {
    y = gemv ? f32_gemv(x, w) : onednn_linear(x, other);
  }
  if (bias.numel()) y.add_(bias);
  return y;
}

// out = weight * (x / sqrt(mean(x^2) + eps)), per row (as model.RMSNorm in float32)
void rms_norm_rows(const float* x, const float* weight, double eps, float* out, int64_t rows, int64_t size) {
  for (int64_t m = 0; m < rows; ++m) {
    const float* xr = x + m * size;
    float total = 0.f;
    for (int64_t i = 0; i < size; ++i) total += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(total / static_cast<float>(size) + static_cast<float>(eps));
    for (int64_t i = 0; i < size; ++i) out[m * size + i] = weight[i] * (xr[i] * inv);
  }
}

// rotate-half rotary in place: x [heads, dim] of one token; cos, sin [dim]
void rotate(float* x, int64_t heads, int64_t dim, const float* cos, const float* sin) {
  const int64_t half = dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i + half] + a * sin[i + half];
    }
  }
}
}  // namespace

// x: [rows, hidden] float32, the residual stream, updated in place. cos, sin: [rows, head_dim] for the
// rows' positions. slots: [rows] int64 cache slots for the new K/V; tables, lens: as paged_decode.
void decode_layer(torch::Tensor x, torch::Tensor cos, torch::Tensor sin, torch::Tensor slots, torch::Tensor k_cache,
                  torch::Tensor v_cache, torch::Tensor tables, torch::Tensor lens, torch::Tensor input_norm,
                  torch::Tensor post_norm, double eps, int64_t heads, int64_t kv_heads, double scale, int64_t window,
                  int64_t gemv_rows, torch::Tensor qkv_w, torch::Tensor qkv_s, torch::Tensor qkv_b, torch::Tensor qkv_x,
                  torch::Tensor o_w, torch::Tensor o_s, torch::Tensor o_b, torch::Tensor o_x, torch::Tensor gate_up_w,
                  torch::Tensor gate_up_s, torch::Tensor gate_up_b, torch::Tensor gate_up_x, torch::Tensor down_w,
                  torch::Tensor down_s, torch::Tensor down_b, torch::Tensor down_x) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.is_contiguous() && x.dim() == 2, "decode_layer: x float32 [rows, hidden]");
  TORCH_CHECK(k_cache.dtype() == torch::kFloat32 && k_cache.is_contiguous() && v_cache.is_contiguous(),
              "decode_layer: a contiguous float32 cache");
  const int64_t rows = x.size(0), hidden = x.size(1), dim = k_cache.size(3);
  TORCH_CHECK(k_cache.size(2) == kv_heads && cos.size(1) == dim && cos.size(0) == rows && slots.size(0) == rows,
              "decode_layer: shapes");
  TORCH_CHECK(slots.scalar_type() == torch::kInt64 && slots.is_contiguous(), "decode_layer: int64 slots");
  TORCH_CHECK(cos.dtype() == torch::kFloat32 && sin.dtype() == torch::kFloat32 && sin.sizes() == cos.sizes(),
              "decode_layer: float32 rotary tables");
  TORCH_CHECK(input_norm.dtype() == torch::kFloat32 && post_norm.dtype() == torch::kFloat32 &&
                  input_norm.numel() == hidden && post_norm.numel() == hidden && input_norm.is_contiguous() &&
                  post_norm.is_contiguous(),
              "decode_layer: float32 norm weights of the hidden size");
  const int64_t cache_slots = k_cache.size(0) * k_cache.size(1), kv_width = kv_heads * dim;
  const int64_t* slot = slots.data_ptr<int64_t>();
  for (int64_t m = 0; m < rows; ++m)
    TORCH_CHECK(slot[m] >= 0 && slot[m] < cache_slots, "decode_layer: slot ", slot[m], " outside the cache");
  cos = cos.contiguous();
  sin = sin.contiguous();
  float* xp = x.data_ptr<float>();
  auto h = torch::empty_like(x);
  rms_norm_rows(xp, input_norm.data_ptr<float>(), eps, h.data_ptr<float>(), rows, hidden);
  auto qkv = decode_linear(h, qkv_w, qkv_s, qkv_b, qkv_x, gemv_rows);  // [rows, (heads + 2 kv_heads) dim]
  const int64_t width = qkv.size(1);
  TORCH_CHECK(width == (heads + 2 * kv_heads) * dim, "decode_layer: the qkv width");
  float* qp = qkv.data_ptr<float>();
  float* kc = k_cache.data_ptr<float>();
  float* vc = v_cache.data_ptr<float>();
  auto q = torch::empty({rows, heads, dim}, x.options());
  for (int64_t m = 0; m < rows; ++m) {
    float* row = qp + m * width;
    const float* c = cos.data_ptr<float>() + m * dim;
    const float* s = sin.data_ptr<float>() + m * dim;
    rotate(row, heads + kv_heads, dim, c, s);  // q and k lie side by side
    std::memcpy(q.data_ptr<float>() + m * heads * dim, row, sizeof(float) * heads * dim);
    std::memcpy(kc + slot[m] * kv_width, row + heads * dim, sizeof(float) * kv_width);
    std::memcpy(vc + slot[m] * kv_width, row + (heads + kv_heads) * dim, sizeof(float) * kv_width);
  }
  auto attn = paged_decode(q, k_cache, v_cache, tables, lens, scale, window);
  x.add_(decode_linear(attn.view({rows, heads * dim}), o_w, o_s, o_b, o_x, gemv_rows));
  rms_norm_rows(xp, post_norm.data_ptr<float>(), eps, h.data_ptr<float>(), rows, hidden);
  auto gate_up = decode_linear(h, gate_up_w, gate_up_s, gate_up_b, gate_up_x, gemv_rows);  // [rows, 2 inter]
  const int64_t inter = gate_up.size(1) / 2;
  auto act = torch::empty({rows, inter}, x.options());
  const float* gu = gate_up.data_ptr<float>();
  float* ap = act.data_ptr<float>();
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t i = 0; i < inter; ++i) {
      const float g = gu[m * 2 * inter + i];
      ap[m * inter + i] = g / (1.f + std::exp(-g)) * gu[m * 2 * inter + inter + i];
    }
  x.add_(decode_linear(act, down_w, down_s, down_b, down_x, gemv_rows));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode", &paged_decode, "Paged decode attention on the CPU");
  m.def("w8a8_available", &w8a8_available, "Whether w8a8_gemv was built (AVX-512 VNNI)");
  m.def("w8a8_gemv", &w8a8_gemv, "int8 weights x int8 activations for a few rows (decode)");
  m.def("f32_gemv_available", &f32_gemv_available, "Whether f32_gemv was built (AVX-512)");
  m.def("f32_gemv", &f32_gemv, "float32 weights x float32 activations for a row or two (decode)");
  m.def("decode_layer", &decode_layer, "One Llama-family decoder layer for a decode step, in place");
}
