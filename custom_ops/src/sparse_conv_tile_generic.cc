// The portable tile kernels of sparse_conv_tile.h: plain C++ over 8-float "vectors",
// for CPUs and builds without AVX2 (the compiler vectorises what it can).
#include "sparse_conv_tile.h"

namespace exprune {
namespace sparse_conv {
namespace {

struct Vec {
  static constexpr int kLanes = 8;
  struct V {
    float f[kLanes];
  };
  using M = int;
  static V Zero() { return V{}; }
  static V Set1(float x) {
    V v;
    for (int i = 0; i < kLanes; ++i) v.f[i] = x;
    return v;
  }
  static V Load(const float* p) {
    V v;
    for (int i = 0; i < kLanes; ++i) v.f[i] = p[i];
    return v;
  }
  static void Store(float* p, const V& v) {
    for (int i = 0; i < kLanes; ++i) p[i] = v.f[i];
  }
  static M Mask(int n) { return n < 0 ? 0 : (n < kLanes ? n : kLanes); }
  static V LoadMasked(const float* p, M n) {
    V v{};
    for (int i = 0; i < n; ++i) v.f[i] = p[i];
    return v;
  }
  static V Fma(const V& a, const V& b, V c) {
    for (int i = 0; i < kLanes; ++i) c.f[i] += a.f[i] * b.f[i];
    return c;
  }
};

}  // namespace
}  // namespace sparse_conv
}  // namespace exprune

#include "sparse_conv_tile_impl.h"

namespace exprune {
namespace sparse_conv {
namespace {

const Kernels kGeneric = {"generic", Vec::kLanes, {MakeShape<1, 8>(), MakeShape<2, 4>()}};

}  // namespace

const Kernels& Generic() { return kGeneric; }

}  // namespace sparse_conv
}  // namespace exprune
