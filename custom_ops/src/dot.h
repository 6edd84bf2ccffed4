// The dot product that finishes a Dense output (x tail row times w_tail row).
#pragma once

#include <cstdint>

namespace exprune {

// sum_i a[i] * b[i]. Out of line so it can be built for several instruction sets and
// chosen when the library loads (dot.cc).
float Dot(const float* a, const float* b, int64_t n);

// out[r] = sum_i a[i] * b[r][i] for r < count (1 to 4): one pass over a serves up to
// four rows, and their horizontal sums share the work. Each out[r] depends only on a
// and b[r], never on count or on the other rows (the lanes never mix rows, and every
// count runs the same per-lane sums), so an output's value does not depend on which
// outputs it was grouped with. `next`, when not null, names four rows the caller reads
// next: they are prefetched line by line as this call streams through its own, since
// rows of surviving outputs are scattered and the hardware prefetcher does not cross
// from one to the next.
void DotGroup(const float* a, const float* const* b, int count, int64_t n, float* out,
              const float* const* next = nullptr);

}  // namespace exprune
