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
  static V Add(V a, V b) { return _mm256_add_ps(a, b); }
  static void StoreMasked(float* p, M m, V v) { _mm256_maskstore_ps(p, m, v); }
  // max and min return their second operand when either is NaN: v passes through.
  static V Relu(V v, V clip) { return _mm256_min_ps(clip, _mm256_max_ps(_mm256_setzero_ps(), v)); }
  // Keeps v in a register: GCC otherwise folds a weight shared by two multiply-adds
  // back into both as memory operands, loading it twice.
  static void Pin(V& v) { asm("" : "+v"(v)); }
  static void Transpose(V (&r)[8]) {
    V t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
      s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
      s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
      r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
  }
};

}  // namespace
}  // namespace sparse_conv
}  // namespace exprune

#include "sparse_conv_tile_impl.h"

namespace exprune {
namespace sparse_conv {
namespace {

// 16 ymm registers: 12 accumulators, the broadcast input and a weight vector.
const Kernels kAvx2 = {
    "avx2", Vec::kLanes, {MakeShape<1, 12>(), MakeShape<2, 6>(), MakeShape<2, 4>()}, Finish, nullptr};

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
