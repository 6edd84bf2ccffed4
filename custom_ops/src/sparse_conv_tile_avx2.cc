// The AVX2+FMA tile kernels of sparse_conv_tile.h. CMakeLists.txt builds this file
// alone with -mavx2 -mfma; without those flags it compiles to a null table.
#include "sparse_conv_tile.h"

#if defined(__AVX2__) && defined(__FMA__)

#include <immintrin.h>

namespace exprune {
namespace sparse_conv {
namespace {

struct Vec {
  using V = __m256;
  using M = __m256i;
  static constexpr int kLanes = 8;
  static V Zero() { return _mm256_setzero_ps(); }
  static V Set1(float x) { return _mm256_set1_ps(x); }
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static M Mask(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
  // maskload reads nothing where the mask is clear.
  static V LoadMasked(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};

}  // namespace
}  // namespace sparse_conv
}  // namespace exprune

#include "sparse_conv_tile_impl.h"

namespace exprune {
namespace sparse_conv {
namespace {

// 16 ymm registers: 12 accumulators, the broadcast input and a weight vector.
const Kernels kAvx2 = {"avx2", Vec::kLanes, {MakeShape<1, 12>(), MakeShape<2, 6>()}};

}  // namespace

const Kernels* Avx2Table() { return &kAvx2; }

}  // namespace sparse_conv
}  // namespace exprune

#else

namespace exprune {
namespace sparse_conv {
const Kernels* Avx2Table() { return nullptr; }
}  // namespace sparse_conv
}  // namespace exprune

#endif
