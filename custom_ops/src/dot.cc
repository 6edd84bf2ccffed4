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

// Sixteen lanes per row: four rows' accumulators fit the AVX2 register file with room
// for the shared input vector.
EXPRUNE_DOT_TARGETS void Dot4(const float* a, const float* const* b, int64_t n, float* out, const float* const* next) {
  constexpr int kLanes = 16;
  const float* b0 = b[0];
  const float* b1 = b[1];
  const float* b2 = b[2];
  const float* b3 = b[3];
  // Without a next group, prefetch the current rows again: harmless, and the loop
  // stays free of branches and of loads of the pointers.
  const float* p0 = next != nullptr ? next[0] : b0;
  const float* p1 = next != nullptr ? next[1] : b1;
  const float* p2 = next != nullptr ? next[2] : b2;
  const float* p3 = next != nullptr ? next[3] : b3;
  float acc0[kLanes] = {}, acc1[kLanes] = {}, acc2[kLanes] = {}, acc3[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    // kLanes floats are one 64-byte line of each row.
    __builtin_prefetch(p0 + i);
    __builtin_prefetch(p1 + i);
    __builtin_prefetch(p2 + i);
    __builtin_prefetch(p3 + i);
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      const float x = a[i + j];
      acc0[j] += x * b0[i + j];
      acc1[j] += x * b1[i + j];
      acc2[j] += x * b2[i + j];
      acc3[j] += x * b3[i + j];
    }
  }
  float rest0 = 0.0f, rest1 = 0.0f, rest2 = 0.0f, rest3 = 0.0f;
  for (; i < n; ++i) {
    rest0 += a[i] * b0[i];
    rest1 += a[i] * b1[i];
    rest2 += a[i] * b2[i];
    rest3 += a[i] * b3[i];
  }
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) {
      acc0[j] += acc0[j + width];
      acc1[j] += acc1[j + width];
      acc2[j] += acc2[j + width];
      acc3[j] += acc3[j + width];
    }
  }
  out[0] = acc0[0] + rest0;
  out[1] = acc1[0] + rest1;
  out[2] = acc2[0] + rest2;
  out[3] = acc3[0] + rest3;
}

}  // namespace exprune
