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
  static V Add(V a, const V& b) {
    for (int i = 0; i < kLanes; ++i) a.f[i] += b.f[i];
    return a;
  }
  static void StoreMasked(float* p, M n, const V& v) {
    for (int i = 0; i < n; ++i) p[i] = v.f[i];
  }
  static V Relu(V v, const V& clip) {
    for (int i = 0; i < kLanes; ++i) {
      v.f[i] = v.f[i] < 0.0f ? 0.0f : v.f[i];
      v.f[i] = v.f[i] > clip.f[i] ? clip.f[i] : v.f[i];
    }
    return v;
  }
  static void Pin(V&) {}
  static void Transpose(V (&r)[kLanes]) {
    for (int i = 0; i < kLanes; ++i) {
      for (int k = i + 1; k < kLanes; ++k) {
        const float t = r[i].f[k];
        r[i].f[k] = r[k].f[i];
        r[k].f[i] = t;
      }
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

const Kernels kGeneric = {
    "generic", Vec::kLanes, {MakeShape<1, 8>(), MakeShape<2, 4>(), MakeShape<2, 2>()}, Finish, nullptr};

}  // namespace

const Kernels& Generic() { return kGeneric; }

}  // namespace sparse_conv
}  // namespace exprune
