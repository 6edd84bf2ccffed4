// The AVX2+FMA kernels of conv_tail.h. CMakeLists.txt builds this file alone with
// -mavx2 -mfma; without those flags it compiles to a null table.
#include "conv_tail.h"

#if defined(__AVX2__) && defined(__FMA__)

#include <immintrin.h>

namespace exprune {
namespace conv_tail {
namespace {

struct Vec {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V Zero() { return _mm256_setzero_ps(); }
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  static V LoadN(const float* p, int n) {
    // Lane i is loaded iff i < n (maskload reads nothing where the mask is clear).
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes));
  }
  static V Broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static void Finish(V dot, int a, int n, const float* partial, const float* res, float bias, const uint8_t* keep,
                     float* y, float clip_max) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i in = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(a), lanes),
                                           _mm256_cmpgt_epi32(_mm256_set1_epi32(a + n), lanes));
    const __m256i kb = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(keep - a)));
    const __m256i m = _mm256_andnot_si256(_mm256_cmpeq_epi32(kb, _mm256_setzero_si256()), in);
    if (_mm256_testz_si256(m, m)) return;
    V base = _mm256_set1_ps(bias);
    if (res != nullptr) base = _mm256_add_ps(base, _mm256_maskload_ps(res - a, m));
    V v = _mm256_add_ps(_mm256_add_ps(_mm256_maskload_ps(partial - a, m), dot), base);
    // max/min return their second operand when either is NaN: act() lets NaN through.
    v = _mm256_max_ps(_mm256_setzero_ps(), v);
    v = _mm256_min_ps(_mm256_set1_ps(clip_max), v);
    _mm256_maskstore_ps(y - a, m, v);
  }
  static float Act(float v, float clip_max) {
    // max/min return their second operand when either is NaN, as act() does.
    const __m128 r = _mm_min_ss(_mm_set_ss(clip_max), _mm_max_ss(_mm_setzero_ps(), _mm_set_ss(v)));
    return _mm_cvtss_f32(r);
  }
  static int Compact(const uint8_t* keep, int n, int64_t p, int64_t off, int64_t step, int64_t* pos, int64_t* offs) {
    int count = 0;
    for (int i = 0; i < n; ++i) {  // branch-free: write every slot, advance on survivors
      pos[count] = p + i;
      offs[count] = off + i * step;
      count += keep[i];
    }
    return count;
  }
  template <int N>
  static void SumN(const V* v, float* out) {
    for (int i = 0; i < N; ++i) out[i] = Sum(v[i]);
  }
  static bool Transpose16(const float*, int64_t, float*, int64_t) { return false; }
  static float Sum(V v) {
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
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

constexpr int kRows = 6, kVectors = 2, kGroup = 8;

const Kernels kAvx2 = {
    "avx2",
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

const Kernels* Avx2Table() { return &kAvx2; }

}  // namespace conv_tail
}  // namespace exprune

#else

namespace exprune {
namespace conv_tail {
const Kernels* Avx2Table() { return nullptr; }
}  // namespace conv_tail
}  // namespace exprune

#endif
