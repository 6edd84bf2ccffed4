// The portable kernels of conv_tail.h: plain C++ over 8-float "vectors", for CPUs
// and builds without AVX2 (the compiler vectorises what it can for the baseline ISA).
#include "conv_tail.h"

namespace exprune {
namespace conv_tail {
namespace {

struct Vec {
  static constexpr int kLanes = 8;
  struct V {
    float f[kLanes];
  };
  static V Zero() { return V{}; }
  static V Load(const float* p) {
    V v;
    for (int i = 0; i < kLanes; ++i) v.f[i] = p[i];
    return v;
  }
  static V LoadN(const float* p, int n) {
    V v{};
    for (int i = 0; i < n; ++i) v.f[i] = p[i];
    return v;
  }
  static V Broadcast(const float* p) {
    V v;
    for (int i = 0; i < kLanes; ++i) v.f[i] = *p;
    return v;
  }
  static V Fma(const V& a, const V& b, V c) {
    for (int i = 0; i < kLanes; ++i) c.f[i] += a.f[i] * b.f[i];
    return c;
  }
  static void Finish(const V& dot, int a, int n, const float* partial, const float* res, float bias,
                     const uint8_t* keep, float* y, float clip_max) {
    for (int i = 0; i < n; ++i) {
      if (keep[i] == 0) continue;
      const float base = res != nullptr ? bias + res[i] : bias;
      float v = partial[i] + dot.f[a + i] + base;
      v = v < 0.0f ? 0.0f : v;
      y[i] = v > clip_max ? clip_max : v;
    }
  }
  static float Act(float v, float clip_max) {
    v = v < 0.0f ? 0.0f : v;
    return v > clip_max ? clip_max : v;
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
  static float Sum(const V& v) {
    return ((v.f[0] + v.f[4]) + (v.f[2] + v.f[6])) + ((v.f[1] + v.f[5]) + (v.f[3] + v.f[7]));
  }
};

}  // namespace
}  // namespace conv_tail
}  // namespace exprune

#include "conv_tail_impl.h"

namespace exprune {
namespace conv_tail {
namespace {

constexpr int kRows = 4, kVectors = 1, kGroup = 4;

const Kernels kGeneric = {
    "generic",
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

const Kernels& Generic() { return kGeneric; }

}  // namespace conv_tail
}  // namespace exprune
