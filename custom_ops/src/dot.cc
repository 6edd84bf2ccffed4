#include "dot.h"

// On x86-64 the build (CMakeLists.txt) defines EXPRUNE_DOT_CLONES when the compiler
// can emit an AVX2+FMA copy next to the portable one; the loader picks the copy the
// CPU runs. This file alone is built with -ffp-contract=fast, so the AVX2 copy fuses
// multiply and add, while the pruning rule elsewhere stays free of contraction.
#if defined(EXPRUNE_DOT_CLONES)
#define EXPRUNE_DOT_TARGETS __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EXPRUNE_DOT_TARGETS
#endif

namespace exprune {

// Independent lanes let the compiler keep several vector accumulators without
// reassociating float math (-ffast-math stays off); the fold order is fixed, so the
// result does not depend on how work is split over threads.
EXPRUNE_DOT_TARGETS float Dot(const float* a, const float* b, int64_t n) {
  constexpr int kLanes = 32;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float rest = 0.0f;
  for (; i < n; ++i) rest += a[i] * b[i];
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0] + rest;
}

}  // namespace exprune
