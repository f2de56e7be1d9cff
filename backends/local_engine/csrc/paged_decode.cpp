// Paged decode attention for the CPU: one new token per sequence attends to its K/V read in place
// through its block table. The torch reference gathers each sequence's blocks into a contiguous copy
// and reads that again (and SDPA with grouped-query attention may expand K/V per head); this reads
// every key and value once, which is what bounds decode attention: memory bandwidth.
//
// Work items are sequences, spread over ATen's thread pool. For each, every query head is scored
// against its kv head's keys, softmaxed in float32, and the values summed. On CPUs with AVX-512 and
// head sizes of 64 or 128 (`fast::decode`), each sequence's blocks are read front to back with the
// next block asked for ahead, the query heads are scored four keys at a time with their sums reduced
// together, and the values summed into registers a few heads at a time; with fewer sequences than two
// per thread the work items are (sequence, kv head) pairs, so that batch-1 decode uses every thread;
// the cache may be float16 or bfloat16 under float32 queries. Ad hoc, one process, 16 sequences of
// 256 to 384 keys over 10 layers of the 100m preset's shapes: 8.4 ms against the generic loop's 10.7
// with blocks scattered, 6.0 against 5.8 with blocks in order; one sequence 0.45 against 0.92.

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

#if defined(__AVX512F__)
namespace fast {
template <typename T>
inline __m512 load16(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return _mm512_loadu_ps(p);
  } else if constexpr (std::is_same_v<T, c10::Half>) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else {  // bfloat16: the upper half of a float32
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
}

// exp of 16 floats, as exp_nonpositive (Cephes), for x in [-87.3, 88.3]: scalef puts the power of two back.
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), x);
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_add_ps(_mm512_fmadd_ps(y, z, x), _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(y, n);
}

// [sum(a), sum(b), sum(c), sum(d)]: four dot products finished with 8 shuffles instead of 16.
inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // per lane: a b a b
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));  // per lane: a b c d
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(abcd),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1)));
  return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}

// Scores of the query heads of kv heads g0..g1 (q [heads, D] float32, scaled) against nt key rows at
// k, k + row_size, ...: scores[h * n + i]. Row by row, every kv head of a row before the next row (the
// order of memory), four keys at a time with their sums reduced together.
template <typename T, int D16>
void score_rows(const float* q, int G, int64_t g0, int64_t g1, const T* k, int64_t row_size, int64_t nt, float* scores,
                int64_t n) {
  constexpr int D = 16 * D16;
  int64_t i = 0;
  for (; i + 4 <= nt; i += 4, k += 4 * row_size) {
    for (int64_t g = g0; g < g1; ++g) {
      const T* kg = k + g * D;
      for (int h = 0; h < G; ++h) {
        const int64_t at = (g - g0) * G + h;
        const float* qh = q + at * D;
        __m512 acc[4];
        for (int j = 0; j < 4; ++j) acc[j] = _mm512_mul_ps(_mm512_loadu_ps(qh), load16(kg + j * row_size));
        for (int c = 1; c < D16; ++c) {
          const __m512 qc = _mm512_loadu_ps(qh + 16 * c);
          for (int j = 0; j < 4; ++j) acc[j] = _mm512_fmadd_ps(qc, load16(kg + j * row_size + 16 * c), acc[j]);
        }
        _mm_storeu_ps(scores + at * n + i, reduce4(acc[0], acc[1], acc[2], acc[3]));
      }
    }
  }
  for (; i < nt; ++i, k += row_size) {
    for (int64_t at = 0; at < (g1 - g0) * G; ++at) {
      const T* kg = k + (g0 + at / G) * D;
      __m512 acc = _mm512_setzero_ps();
      for (int c = 0; c < D16; ++c) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + at * D + 16 * c), load16(kg + 16 * c), acc);
      scores[at * n + i] = _mm512_reduce_add_ps(acc);
    }
  }
}

// acc[h] += p[h * n + i] * v_i for HB heads over nt values at v, v + row_size, ..., in registers.
template <typename T, int D16, int HB>
void value_rows(const T* v, int64_t row_size, int64_t nt, const float* p, int64_t n, float* out) {
  __m512 acc[HB][D16];
  for (int h = 0; h < HB; ++h)
    for (int c = 0; c < D16; ++c) acc[h][c] = _mm512_loadu_ps(out + h * D16 * 16 + 16 * c);
  for (int64_t i = 0; i < nt; ++i, v += row_size) {
    __m512 vv[D16];
    for (int c = 0; c < D16; ++c) vv[c] = load16(v + 16 * c);
    for (int h = 0; h < HB; ++h) {
      const __m512 w = _mm512_set1_ps(p[h * n + i]);
      for (int c = 0; c < D16; ++c) acc[h][c] = _mm512_fmadd_ps(w, vv[c], acc[h][c]);
    }
  }
  for (int h = 0; h < HB; ++h)
    for (int c = 0; c < D16; ++c) _mm512_storeu_ps(out + h * D16 * 16 + 16 * c, acc[h][c]);
}

// exp(s - max) in place over each of `heads` rows of n scores; returns nothing, writes 1 / sum per row.
inline void softmax_rows(float* scores, int64_t heads, int64_t n, float* inv) {
  for (int64_t h = 0; h < heads; ++h) {
    float* sh = scores + h * n;
    __m512 peak16 = _mm512_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) peak16 = _mm512_max_ps(peak16, _mm512_loadu_ps(sh + j));
    float peak = _mm512_reduce_max_ps(peak16);
    for (; j < n; ++j) peak = std::max(peak, sh[j]);
    const __m512 top = _mm512_set1_ps(peak);
    __m512 sum16 = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
      const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(sh + j), top));
      _mm512_storeu_ps(sh + j, e);
      sum16 = _mm512_add_ps(sum16, e);
    }
    if (j < n) {
      const __mmask16 mask = static_cast<__mmask16>((1u << (n - j)) - 1);
      const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, sh + j), top));
      _mm512_mask_storeu_ps(sh + j, mask, e);
      sum16 = _mm512_add_ps(sum16, _mm512_maskz_mov_ps(mask, e));
    }
    inv[h] = 1.f / _mm512_reduce_add_ps(sum16);
  }
}

// One sequence's kv heads g0..g1 (all of them, or one): q [heads of those kv heads, D] float32,
// scaled; keys first..len-1 read block by block, every kv head of a block row together, so that the
// cache is read front to back; scores: room for [heads, len - first]; out [heads, D].
template <typename T, int D16>
void attend(const float* q, int G, int64_t g0, int64_t g1, const T* k_cache, const T* v_cache, const int64_t* table,
            int64_t block_size, int64_t row_size, int64_t first, int64_t len, float* scores, float* inv, float* out) {
  constexpr int D = 16 * D16;
  constexpr int HB = D16 <= 4 ? 4 : 2;  // heads whose sums fit in registers beside one value row
  const int64_t n = len - first, heads = (g1 - g0) * G;
  // Blocks lie anywhere in the cache, and the hardware prefetcher stops at page boundaries: the next
  // block is asked for while this one is worked on.
  const int64_t block_bytes = block_size * row_size * static_cast<int64_t>(sizeof(T));
  auto each_block = [&](const T* cache, auto&& visit) {
    for (int64_t t = first; t < len;) {
      const int64_t block = t / block_size, stop = std::min(len, (block + 1) * block_size);
      if (stop < len) {
        const char* ahead = reinterpret_cast<const char*>(cache + table[block + 1] * block_size * row_size);
        for (int64_t b = 0; b < block_bytes; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T1);
      }
      visit(cache + (table[block] * block_size + t % block_size) * row_size, t - first, stop - t);
      t = stop;
    }
  };
  each_block(k_cache, [&](const T* rows, int64_t i, int64_t nt) {
    score_rows<T, D16>(q, G, g0, g1, rows, row_size, nt, scores + i, n);
  });
  softmax_rows(scores, heads, n, inv);
  std::fill(out, out + heads * D, 0.f);
  each_block(v_cache, [&](const T* rows, int64_t i, int64_t nt) {
    for (int64_t g = g0; g < g1; ++g)
      for (int h = 0; h < G; h += HB) {
        const int64_t at = (g - g0) * G + h;
        const T* v = rows + g * D;
        switch (std::min(HB, G - h)) {
          case 4: if constexpr (HB >= 4) value_rows<T, D16, 4>(v, row_size, nt, scores + at * n + i, n, out + at * D); break;
          case 3: if constexpr (HB >= 3) value_rows<T, D16, 3>(v, row_size, nt, scores + at * n + i, n, out + at * D); break;
          case 2: value_rows<T, D16, 2>(v, row_size, nt, scores + at * n + i, n, out + at * D); break;
          default: value_rows<T, D16, 1>(v, row_size, nt, scores + at * n + i, n, out + at * D); break;
        }
      }
  });
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t d = 0; d < D; ++d) out[h * D + d] *= inv[h];
}

// q and out in scalar_t, the cache in cache_t (the same, or float16 / bfloat16 under a float32 model).
template <typename scalar_t, typename cache_t, int D16>
void decode(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
            const torch::Tensor& tables, const torch::Tensor& lens, double scale, int64_t window, torch::Tensor& out) {
  constexpr int D = 16 * D16;
  const int64_t seqs = q.size(0), heads = q.size(1);
  const int64_t block_size = k_cache.size(1), kv_heads = k_cache.size(2), width = tables.size(1);
  const int G = static_cast<int>(heads / kv_heads);
  const scalar_t* q_data = q.data_ptr<scalar_t>();
  const int64_t* table_data = tables.data_ptr<int64_t>();
  const int64_t* len_data = lens.data_ptr<int64_t>();
  scalar_t* out_data = out.data_ptr<scalar_t>();
  const float fscale = static_cast<float>(scale);
  int64_t longest = 0;
  for (int64_t s = 0; s < seqs; ++s) longest = std::max(longest, len_data[s]);
  // Work items: whole sequences, which read the cache front to back; with fewer sequences than two per
  // thread, (sequence, kv head) pairs instead, so that every thread has work. Longest first.
  const int64_t split = seqs < 2 * at::get_num_threads() ? kv_heads : 1, items = seqs * split;
  std::vector<int64_t> order(items);
  for (int64_t i = 0; i < items; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return len_data[a / split] > len_data[b / split]; });
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<float> query(heads * D), acc(heads * D), scores(heads * longest), inv(heads);
    for (int64_t taken; (taken = next.fetch_add(1)) < items;) {
      const int64_t s = order[taken] / split;
      const int64_t g0 = split == 1 ? 0 : order[taken] % split, g1 = split == 1 ? kv_heads : g0 + 1;
      const int64_t len = len_data[s], count = (g1 - g0) * G * D;
      const int64_t first = window > 0 ? std::max<int64_t>(0, len - window) : 0;
      const scalar_t* qs = q_data + (s * heads + g0 * G) * D;
      for (int64_t i = 0; i < count; ++i) query[i] = static_cast<float>(qs[i]) * fscale;
      attend<cache_t, D16>(query.data(), G, g0, g1, k_cache.data_ptr<cache_t>(), v_cache.data_ptr<cache_t>(),
                            table_data + s * width, block_size, kv_heads * D, first, len, scores.data(), inv.data(),
                            acc.data());
      scalar_t* dst = out_data + (s * heads + g0 * G) * D;
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}
}  // namespace fast
#endif

// q: [seqs, heads, dim]; k_cache, v_cache: [blocks, block_size, kv_heads, dim]; tables: [seqs, width]
// int64 block ids; lens: [seqs] int64 keys per sequence (the new token's included); window <= 0: none.
// The cache shares q's dtype, or is float16 / bfloat16 under a float32 q (out: float32).
torch::Tensor paged_decode(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor tables,
                           torch::Tensor lens, double scale, int64_t window) {
  TORCH_CHECK(q.device().is_cpu() && k_cache.device().is_cpu(), "paged_decode: CPU tensors only");
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "paged_decode: bad shapes");
  const bool narrow_cache = q.scalar_type() == torch::kFloat32 &&
                            (k_cache.scalar_type() == torch::kHalf || k_cache.scalar_type() == torch::kBFloat16);
  TORCH_CHECK((q.scalar_type() == k_cache.scalar_type() || narrow_cache) && v_cache.scalar_type() == k_cache.scalar_type(),
              "paged_decode: q and the cache must share a dtype (or a float32 q, a float16 or bfloat16 cache)");
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
  const bool fast_shape = q.size(2) == 64 || q.size(2) == 128;
#if defined(__AVX512F__)
  const bool avx512 = true;
#else
  const bool avx512 = false;
#endif
  if (narrow_cache && !(avx512 && fast_shape))  // no mixed kernel here: q in the cache's type, out back in float32
    return paged_decode(q.to(k_cache.scalar_type()), k_cache, v_cache, tables, lens, scale, window).to(torch::kFloat32);
  auto out = torch::empty_like(q);
#if defined(__AVX512F__)
  if (narrow_cache) {
    AT_DISPATCH_SWITCH(k_cache.scalar_type(), "paged_decode", AT_DISPATCH_CASE(at::kHalf, [&] {
      if (q.size(2) == 64) fast::decode<float, scalar_t, 4>(q, k_cache, v_cache, tables, lens, scale, window, out);
      else fast::decode<float, scalar_t, 8>(q, k_cache, v_cache, tables, lens, scale, window, out);
    }) AT_DISPATCH_CASE(at::kBFloat16, [&] {
      if (q.size(2) == 64) fast::decode<float, scalar_t, 4>(q, k_cache, v_cache, tables, lens, scale, window, out);
      else fast::decode<float, scalar_t, 8>(q, k_cache, v_cache, tables, lens, scale, window, out);
    }));
    return out;
  }
#endif
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "paged_decode", [&] {
#if defined(__AVX512F__)
    if constexpr (!std::is_same_v<scalar_t, double>) {
      if (fast_shape) {
        if (q.size(2) == 64) {
          fast::decode<scalar_t, scalar_t, 4>(q, k_cache, v_cache, tables, lens, scale, window, out);
        } else {
          fast::decode<scalar_t, scalar_t, 8>(q, k_cache, v_cache, tables, lens, scale, window, out);
        }
        return;
      }
    }
#endif
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

// --- float32 weights in panels: up to 16 rows ------------------------------------------------------
//
// For a decode step of a few rows each weight is used once per row and the step reads every weight of
// the model from memory: the matmul is as much a stream of weights as arithmetic. oneDNN's blocked
// matmul did the two one after the other (16 rows of the 100m preset: about the sum of the time to
// read the weights and the time of its FMAs). Here the weight is packed once into panels of 16 output
// channels, each [K, 16] (one cache line per input channel), and read front to back while the
// products run: per input channel one line is loaded and asked for a few lines ahead, and each row of
// x takes one broadcast FMA into its accumulator, so the weight stream and the FMAs overlap.

torch::Tensor f32_pack_panels(torch::Tensor w) {
  TORCH_CHECK(w.dtype() == torch::kFloat32 && w.dim() == 2, "f32_pack_panels: float32 [out, in]");
  w = w.contiguous();
  const int64_t N = w.size(0), K = w.size(1), panels = (N + 15) / 16;
  auto out = torch::zeros({panels, K, 16}, w.options());  // the last panel's missing channels stay 0
  const float* src = w.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t j = 0; j < 16 && p * 16 + j < N; ++j)
        for (int64_t k = 0; k < K; ++k) dst[(p * K + k) * 16 + j] = src[(p * 16 + j) * K + k];
  });
  return out;
}

#if defined(__AVX512F__)
namespace {
// x: [M, K] rows (kTransposed false), or [K, 16] (true: the rows' values of an input channel in one
// line, so that the broadcasts read L1; ad hoc, the 100m preset's linears and head: 16 rows 15.9 ms
// against 20.0, 12 rows 13.3 against 13.8, 10 rows or fewer the same or slower).
template <int M, bool kTransposed>
void panel_rows(const float* x, int64_t K, const float* panel, float* y, int64_t N, int64_t n0) {
  __m512 acc[M];
  for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
  // Lines (input channels) asked for ahead of use: into L1 a little ahead, into L2 far ahead (ad hoc,
  // 16 rows of the 100m preset: 24 and 128 lines 21.8 ms, 24 alone 23.5, oneDNN 24.8).
  constexpr int64_t kNear = 24, kFar = 128;
  for (int64_t k = 0; k < K; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(panel + (k + kNear) * 16), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(panel + (k + kFar) * 16), _MM_HINT_T1);
    const __m512 w = _mm512_loadu_ps(panel + k * 16);
    for (int m = 0; m < M; ++m)
      acc[m] = _mm512_fmadd_ps(_mm512_set1_ps(kTransposed ? x[k * 16 + m] : x[m * K + k]), w, acc[m]);
  }
  const int64_t width = std::min<int64_t>(16, N - n0);
  const __mmask16 mask = width == 16 ? __mmask16(0xFFFF) : __mmask16((1u << width) - 1);
  for (int m = 0; m < M; ++m) _mm512_mask_storeu_ps(y + m * N + n0, mask, acc[m]);
}

template <int M>
void panel_mm(const float* x, int64_t K, const float* panels, float* y, int64_t N) {
  const int64_t count = (N + 15) / 16;
  if constexpr (M > 10) {
    std::vector<float> xt(K * 16);
    for (int m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) xt[k * 16 + m] = x[m * K + k];
    at::parallel_for(0, count, 4, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) panel_rows<M, true>(xt.data(), K, panels + p * K * 16, y, N, p * 16);
    });
  } else {
    at::parallel_for(0, count, 4, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) panel_rows<M, false>(x, K, panels + p * K * 16, y, N, p * 16);
    });
  }
}
}  // namespace
#endif

bool f32_panels_available() {
#if defined(__AVX512F__)
  return true;
#else
  return false;
#endif
}

// x [rows <= 16, K] float32, panels from f32_pack_panels of a weight [N, K] -> x w^T [rows, N].
torch::Tensor f32_panel_mm(torch::Tensor x, torch::Tensor panels, int64_t N) {
#if defined(__AVX512F__)
  TORCH_CHECK(x.dtype() == torch::kFloat32 && panels.dtype() == torch::kFloat32 && x.dim() == 2 && panels.dim() == 3,
              "f32_panel_mm: float32 x [rows, in] and panels [N/16, in, 16]");
  TORCH_CHECK(panels.is_contiguous() && panels.size(1) == x.size(1) && panels.size(2) == 16 &&
                  panels.size(0) == (N + 15) / 16,
              "f32_panel_mm: shapes");
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK(M >= 1 && M <= 16, "f32_panel_mm: 1 to 16 rows");
  x = x.contiguous();
  auto y = torch::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* pp = panels.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  switch (M) {
#define PANEL_CASE(R) \
  case R: panel_mm<R>(xp, K, pp, yp, N); break;
    PANEL_CASE(1) PANEL_CASE(2) PANEL_CASE(3) PANEL_CASE(4) PANEL_CASE(5) PANEL_CASE(6) PANEL_CASE(7) PANEL_CASE(8)
    PANEL_CASE(9) PANEL_CASE(10) PANEL_CASE(11) PANEL_CASE(12) PANEL_CASE(13) PANEL_CASE(14) PANEL_CASE(15) PANEL_CASE(16)
#undef PANEL_CASE
    default: break;
  }
  return y;
#else
  TORCH_CHECK(false, "f32_panel_mm: built without AVX-512");
  return x;
#endif
}

// --- one decoder layer for a decode step ----------------------------------------------------------
//
// At batch 1 a decode step of a small model is mostly the cost of calling ops, not of doing them: the
// elementwise work of a layer (two RMSNorms, rotary, the KV write, SiLU, two residual adds) is a few
// thousand floats, spread over some 30 torch ops and a dozen module calls. This runs a whole
// Llama-family layer in one call: the same math as model.DecoderLayer (transformers' order of
// operations, float32 throughout). A linear is (weight, scale, bias, other): a float32 weight in
// panels (f32_pack_panels) with an empty scale and, as `other`, oneDNN's reordered copy of it; int8
// codes with float32 scales per output channel and, as `other`, the scales in bf16; or int4 codes
// packed for PyTorch's int4 kernel (uint8) with its bf16 scales and offsets. Up to `gemv_rows` rows go
// to the small-row kernels above (float32 panels, the int8 GEMV), more to oneDNN's matmul (float32)
// or PyTorch's int8 kernel (bf16 activations), as the modules would; int4 always to PyTorch's int4
// kernel. An empty bias is none. The K/V cache is float32, or float16 / bfloat16 (written rounded).

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
    y = gemv ? f32_panel_mm(x, w, other.size(0)) : onednn_linear(x, other);
  }
  if (bias.numel()) y.add_(bias);
  return y;
}

// out = weight * (x / sqrt(mean(x^2) + eps)), per row (as model.RMSNorm in float32)
void rms_norm_rows(const float* x, const float* weight, double eps, float* out, int64_t rows, int64_t size) {
  for (int64_t m = 0; m < rows; ++m) {
    const float* xr = x + m * size;
    float total = 0.f;
#pragma omp simd reduction(+ : total)
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

// gate_up: [rows, 2 inter] float32, gate then up -> silu(gate) * up [rows, inter], as model.MLP.
torch::Tensor silu_mul(torch::Tensor gate_up) {
  TORCH_CHECK(gate_up.dtype() == torch::kFloat32 && gate_up.dim() == 2 && gate_up.size(1) % 2 == 0,
              "silu_mul: float32 [rows, 2 inter]");
  gate_up = gate_up.contiguous();
  const int64_t rows = gate_up.size(0), inter = gate_up.size(1) / 2;
  auto act = torch::empty({rows, inter}, gate_up.options());
  const float* gu = gate_up.data_ptr<float>();
  float* ap = act.data_ptr<float>();
  at::parallel_for(0, rows * inter, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t at = begin; at < end;) {
      const int64_t m = at / inter, i = at % inter, stop = std::min(end - at, inter - i);
      const float* g = gu + m * 2 * inter + i;
      const float* u = g + inter;
      float* a = ap + m * inter + i;
      int64_t j = 0;
#if defined(__AVX512F__)
      for (; j + 16 <= stop; j += 16) {
        const __m512 gv = _mm512_loadu_ps(g + j);
        const __m512 e = fast::exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        _mm512_storeu_ps(a + j, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.f), e)),
                                              _mm512_loadu_ps(u + j)));
      }
#endif
      for (; j < stop; ++j) a[j] = g[j] / (1.f + std::exp(-g[j])) * u[j];
      at += stop;
    }
  });
  return act;
}

// x [rows, size] float32 -> weight * (x / sqrt(mean(x^2) + eps)) per row, rows spread over the threads.
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && weight.dtype() == torch::kFloat32 && x.dim() == 2 &&
                  weight.numel() == x.size(1),
              "rms_norm: float32 x [rows, size] and weight [size]");
  x = x.contiguous();
  weight = weight.contiguous();
  auto out = torch::empty_like(x);
  const int64_t size = x.size(1);
  at::parallel_for(0, x.size(0), std::max<int64_t>(1, 16384 / size), [&](int64_t begin, int64_t end) {
    rms_norm_rows(x.data_ptr<float>() + begin * size, weight.data_ptr<float>(), eps, out.data_ptr<float>() + begin * size,
                  end - begin, size);
  });
  return out;
}

// Rotary in place on a fused q/k/v projection's output: qkv [tokens, (heads + 2 kv_heads) dim] float32,
// its q and k heads rotated (rotate-half, as model.Rotary); cos, sin [tokens, dim].
void rotary_(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, int64_t heads, int64_t kv_heads) {
  TORCH_CHECK(qkv.dtype() == torch::kFloat32 && qkv.is_contiguous() && qkv.dim() == 2, "rotary_: contiguous float32 qkv");
  TORCH_CHECK(cos.dtype() == torch::kFloat32 && sin.sizes() == cos.sizes() && cos.size(0) == qkv.size(0), "rotary_: shapes");
  cos = cos.contiguous();
  sin = sin.contiguous();
  const int64_t dim = cos.size(1), width = qkv.size(1);
  TORCH_CHECK(width == (heads + 2 * kv_heads) * dim, "rotary_: the qkv width");
  at::parallel_for(0, qkv.size(0), 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      rotate(qkv.data_ptr<float>() + t * width, heads + kv_heads, dim, cos.data_ptr<float>() + t * dim,
             sin.data_ptr<float>() + t * dim);
  });
}

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
  const auto kv_type = k_cache.scalar_type();
  TORCH_CHECK((kv_type == torch::kFloat32 || kv_type == torch::kHalf || kv_type == torch::kBFloat16) &&
                  v_cache.scalar_type() == kv_type && k_cache.is_contiguous() && v_cache.is_contiguous(),
              "decode_layer: a contiguous float32, float16 or bfloat16 cache");
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
  auto q = torch::empty({rows, heads, dim}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, kv_type, "decode_layer", [&] {
    scalar_t* kc = k_cache.data_ptr<scalar_t>();
    scalar_t* vc = v_cache.data_ptr<scalar_t>();
    for (int64_t m = 0; m < rows; ++m) {
      float* row = qp + m * width;
      const float* c = cos.data_ptr<float>() + m * dim;
      const float* s = sin.data_ptr<float>() + m * dim;
      rotate(row, heads + kv_heads, dim, c, s);  // q and k lie side by side
      std::memcpy(q.data_ptr<float>() + m * heads * dim, row, sizeof(float) * heads * dim);
      const float* k = row + heads * dim;
      const float* v = k + kv_width;
      for (int64_t i = 0; i < kv_width; ++i) {  // as write_kv: cast to the cache's type
        kc[slot[m] * kv_width + i] = static_cast<scalar_t>(k[i]);
        vc[slot[m] * kv_width + i] = static_cast<scalar_t>(v[i]);
      }
    }
  });
  auto attn = paged_decode(q, k_cache, v_cache, tables, lens, scale, window);
  x.add_(decode_linear(attn.view({rows, heads * dim}), o_w, o_s, o_b, o_x, gemv_rows));
  rms_norm_rows(xp, post_norm.data_ptr<float>(), eps, h.data_ptr<float>(), rows, hidden);
  auto gate_up = decode_linear(h, gate_up_w, gate_up_s, gate_up_b, gate_up_x, gemv_rows);  // [rows, 2 inter]
  x.add_(decode_linear(silu_mul(gate_up), down_w, down_s, down_b, down_x, gemv_rows));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode", &paged_decode, "Paged decode attention on the CPU");
  m.def("w8a8_available", &w8a8_available, "Whether w8a8_gemv was built (AVX-512 VNNI)");
  m.def("w8a8_gemv", &w8a8_gemv, "int8 weights x int8 activations for a few rows (decode)");
  m.def("rms_norm", &rms_norm, "RMSNorm of float32 rows");
  m.def("rotary_", &rotary_, "rotate-half rotary in place on a fused q/k/v output");
  m.def("silu_mul", &silu_mul, "silu(gate) * up of a fused gate/up projection's output");
  m.def("f32_pack_panels", &f32_pack_panels, "a float32 weight [out, in] in panels of 16 output channels");
  m.def("f32_panels_available", &f32_panels_available, "Whether f32_panel_mm was built (AVX-512)");
  m.def("f32_panel_mm", &f32_panel_mm, "float32 x [<= 16 rows] times a weight in panels");
  m.def("decode_layer", &decode_layer, "One Llama-family decoder layer for a decode step, in place");
}
