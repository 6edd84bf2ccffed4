// The dot product that finishes a Dense output (x tail row times w_tail row).
#pragma once

#include <cstdint>

namespace exprune {

// sum_i a[i] * b[i]. Out of line so it can be built for several instruction sets and
// chosen when the library loads (dot.cc).
float Dot(const float* a, const float* b, int64_t n);

}  // namespace exprune
