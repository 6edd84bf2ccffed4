// The AVX-512 kernels of conv_tail.h. CMakeLists.txt builds this file alone with
// -mavx512f (and friends); without those flags it compiles to a null table.
#include "conv_tail.h"

#if defined(__AVX512F__) && defined(__FMA__)

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_ps() as the unused merge source,
// which trips -W(maybe-)uninitialized wherever they are inlined; it is a false alarm.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "transpose_avx512.h"

namespace exprune {
namespace conv_tail {
namespace {

struct Vec {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V Zero() { return _mm512_setzero_ps(); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static V LoadN(const float* p, int n) { return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p); }
  static V Broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static void Finish(V dot, int a, int n, const float* partial, const float* res, float bias, const uint8_t* keep,
                     float* y, float clip_max) {
    const __mmask16 lanes = static_cast<__mmask16>((n >= kLanes ? 0xFFFFu : (1u << n) - 1u) << a);
    const __m128i kb = _mm_maskz_loadu_epi8(lanes, keep - a);
    const __mmask16 m = _mm_test_epi8_mask(kb, kb);
    if (m == 0) return;
    V base = _mm512_set1_ps(bias);
    if (res != nullptr) base = _mm512_add_ps(base, _mm512_maskz_loadu_ps(m, res - a));
    V v = _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(m, partial - a), dot), base);
    // max/min return their second operand when either is NaN: act() lets NaN through.
    v = _mm512_max_ps(_mm512_setzero_ps(), v);
    v = _mm512_min_ps(_mm512_set1_ps(clip_max), v);
    _mm512_mask_storeu_ps(y - a, m, v);
  }
  static float Act(float v, float clip_max) {
    // max/min return their second operand when either is NaN, as act() does.
    const __m128 r = _mm_min_ss(_mm_set_ss(clip_max), _mm_max_ss(_mm_setzero_ps(), _mm_set_ss(v)));
    return _mm_cvtss_f32(r);
  }
  static int Compact(const uint8_t* keep, int n, int64_t p, int64_t off, int64_t step, int64_t* pos, int64_t* offs) {
    const __m512i iota = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    const __m512i step8 = _mm512_mullo_epi64(iota, _mm512_set1_epi64(step));
    int count = 0;
    for (int i = 0; i < n; i += 8) {
      const __m128i kb = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(keep + i));
      __mmask8 m = static_cast<__mmask8>(_mm_test_epi8_mask(kb, kb));
      if (n - i < 8) m = static_cast<__mmask8>(m & ((1u << (n - i)) - 1u));
      // Compress in registers, then store whole vectors (the memory form is slow on some cores).
      const __m512i vp = _mm512_add_epi64(_mm512_set1_epi64(p + i), iota);
      const __m512i vo = _mm512_add_epi64(_mm512_set1_epi64(off + i * step), step8);
      _mm512_storeu_si512(pos + count, _mm512_maskz_compress_epi64(m, vp));
      _mm512_storeu_si512(offs + count, _mm512_maskz_compress_epi64(m, vo));
      count += __builtin_popcount(m);
    }
    return count;
  }
  // Sum() of up to 8 vectors at once, adding the same pairs in the same order (lane
  // i + i+8, then i + i+4, i + i+2, i + i+1), with the vectors interleaved so that
  // every shuffle and add serves several of them.
  template <int N>
  static void SumN(const V* v, float* out) {
    if constexpr (N < 4) {
      for (int i = 0; i < N; ++i) out[i] = Sum(v[i]);
    } else {
      V a[8];
      for (int i = 0; i < 8; ++i) a[i] = i < N ? v[i] : _mm512_setzero_ps();
      V b[4], c[2];
      for (int i = 0; i < 4; ++i) {  // 128-bit chunks [x0 x1 y0 y1] + [x2 x3 y2 y3]
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
      }
      for (int i = 0; i < 2; ++i) {  // chunks [x0 y0 z0 w0] + [x1 y1 z1 w1]
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
      }
      // Chunk k now holds vector k's 4 partial sums in c[0] and vector 4 + k's in c[1].
      const V d = _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], 0x44), _mm512_shuffle_ps(c[0], c[1], 0xEE));
      // Chunk k: [v_k lane 0, v_k lane 1, v_4+k lane 0, v_4+k lane 1].
      const V e = _mm512_add_ps(d, _mm512_shuffle_ps(d, d, 0xB1));
      alignas(64) float lanes[16];
      _mm512_store_ps(lanes, e);
      for (int i = 0; i < N; ++i) out[i] = lanes[(i & 3) * 4 + (i >> 2) * 2];
    }
  }
  // dst[j * ds + i] = src[i * ss + j] for a 16 x 16 block.
  static bool Transpose16(const float* src, int64_t ss, float* dst, int64_t ds) {
    V r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ss);
    avx512::Transpose16x16(r);
    for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ds, r[i]);
    return true;
  }
  static float Sum(V v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 d = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));
  }
};

}  // namespace
}  // namespace conv_tail
}  // namespace exprune

#include "conv_tail_impl.h"

namespace exprune {
namespace conv_tail {
namespace {

constexpr int kRows = 8, kVectors = 2, kGroup = 8;

const Kernels kAvx512 = {
    "avx512",
    kRows,
    kVectors * Vec::kLanes,
    kGroup,
    DenseDispatch<kVectors, kRows>,
    SparseRun<kGroup>,
    Transpose,
    DecideImpl,
    DecideStatsImpl,
    DecideCertifiedImpl,
};

}  // namespace

const Kernels* Avx512Table() { return &kAvx512; }

}  // namespace conv_tail
}  // namespace exprune

#else

namespace exprune {
namespace conv_tail {
const Kernels* Avx512Table() { return nullptr; }
}  // namespace conv_tail
}  // namespace exprune

#endif
