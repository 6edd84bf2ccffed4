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

namespace {

// Sixteen lanes per row: four rows' accumulators fit the AVX2 register file with room
// for the shared input vector. R rows are done; the prefetch covers all four of next.
template <int R>
__attribute__((always_inline)) inline void DotRows(const float* a, const float* const* b, int64_t n, float* out,
                                                   const float* const* next) {
  constexpr int kLanes = 16;
  // Without a next group, prefetch the current rows again: harmless, and the loop
  // stays free of branches and of loads of the pointers.
  const float* p[4];
  for (int r = 0; r < 4; ++r) p[r] = next != nullptr ? next[r] : b[r < R ? r : 0];
  float acc[R][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    // kLanes floats are one 64-byte line of each row.
    for (int r = 0; r < 4; ++r) __builtin_prefetch(p[r] + i);
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      const float x = a[i + j];
      for (int r = 0; r < R; ++r) acc[r][j] += x * b[r][i + j];
    }
  }
  float rest[R] = {};
  for (; i < n; ++i) {
    for (int r = 0; r < R; ++r) rest[r] += a[i] * b[r][i];
  }
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int r = 0; r < R; ++r) {
      for (int j = 0; j < width; ++j) acc[r][j] += acc[r][j + width];
    }
  }
  for (int r = 0; r < R; ++r) out[r] = acc[r][0] + rest[r];
}

EXPRUNE_DOT_TARGETS void Dot1(const float* a, const float* const* b, int64_t n, float* out, const float* const* next) {
  DotRows<1>(a, b, n, out, next);
}
EXPRUNE_DOT_TARGETS void Dot2(const float* a, const float* const* b, int64_t n, float* out, const float* const* next) {
  DotRows<2>(a, b, n, out, next);
}
EXPRUNE_DOT_TARGETS void Dot3(const float* a, const float* const* b, int64_t n, float* out, const float* const* next) {
  DotRows<3>(a, b, n, out, next);
}
EXPRUNE_DOT_TARGETS void Dot4Rows(const float* a, const float* const* b, int64_t n, float* out,
                                  const float* const* next) {
  DotRows<4>(a, b, n, out, next);
}

}  // namespace

void DotGroup(const float* a, const float* const* b, int count, int64_t n, float* out, const float* const* next) {
  switch (count) {
    case 1:
      return Dot1(a, b, n, out, next);
    case 2:
      return Dot2(a, b, n, out, next);
    case 3:
      return Dot3(a, b, n, out, next);
    default:
      return Dot4Rows(a, b, n, out, next);
  }
}

}  // namespace exprune
