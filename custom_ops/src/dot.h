// The dot product that finishes a Dense output (x tail row times w_tail row).
#pragma once

#include <cstdint>

namespace exprune {

// sum_i a[i] * b[i]. Out of line so it can be built for several instruction sets and
// chosen when the library loads (dot.cc).
float Dot(const float* a, const float* b, int64_t n);

// out[r] = sum_i a[i] * b[r][i] for r < 4: one pass over a serves four rows of weights,
// and the four horizontal sums share the work. Each out[r] depends only on a and b[r]
// (the lanes never mix rows), so an output's value does not depend on which outputs
// it was grouped with; pass the same row twice to fill a group. `next`, when not null,
// names the four rows the caller reads next: they are prefetched line by line as this
// call streams through its own, since rows of surviving outputs are scattered and the
// hardware prefetcher does not cross from one to the next.
void Dot4(const float* a, const float* const* b, int64_t n, float* out, const float* const* next = nullptr);

}  // namespace exprune
