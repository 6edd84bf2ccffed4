// The AVX-512 tile kernels of sparse_conv_tile.h. CMakeLists.txt builds this file
// alone with the AVX-512 flags; without them it compiles to a null table.
#include "sparse_conv_tile.h"

#if defined(__AVX512F__) && defined(__FMA__)

#include <immintrin.h>

namespace exprune {
namespace sparse_conv {
namespace {

struct Vec {
  using V = __m512;
  using M = __mmask16;
  static constexpr int kLanes = 16;
  static V Zero() { return _mm512_setzero_ps(); }
  static V Set1(float x) { return _mm512_set1_ps(x); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static M Mask(int n) { return n >= 16 ? M(0xFFFF) : (n <= 0 ? M(0) : static_cast<M>((1u << n) - 1u)); }
  // Masked-out lanes are neither read nor able to fault.
  static V LoadMasked(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};

}  // namespace
}  // namespace sparse_conv
}  // namespace exprune

#include "sparse_conv_tile_impl.h"

namespace exprune {
namespace sparse_conv {
namespace {

// 32 zmm registers: 24 accumulators, the broadcast input and weight vectors.
const Kernels kAvx512 = {"avx512", Vec::kLanes, {MakeShape<1, 24>(), MakeShape<2, 12>()}};

}  // namespace

const Kernels* Avx512Table() { return &kAvx512; }

}  // namespace sparse_conv
}  // namespace exprune

#else

namespace exprune {
namespace sparse_conv {
const Kernels* Avx512Table() { return nullptr; }
}  // namespace sparse_conv
}  // namespace exprune

#endif
