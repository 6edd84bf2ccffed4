#include "sparse_matmul.h"

#include <algorithm>
#include <bitset>
#include <cstring>
#include <limits>
#include <vector>

// As in dot.cc: on x86-64 the build defines EXPRUNE_DOT_CLONES when the compiler can
// emit an AVX2+FMA copy next to the portable one, and the loader picks the copy the CPU
// runs. This file is built with -ffp-contract=fast (it has no pruning rule whose
// rounding is specified), so the AVX2 copy fuses each multiply-add, as MatMul does.
#if defined(EXPRUNE_DOT_CLONES)
#define EXPRUNE_AXPY_TARGETS __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EXPRUNE_AXPY_TARGETS
#endif

namespace exprune {

// y[j] += c[0] * w[0][j], then += c[1] * w[1][j], ... for q <= 4 terms, in that order.
// One pass over y serves up to four rows of w, with the sum order of one AXPY per
// term, so how terms are grouped never changes the result.
EXPRUNE_AXPY_TARGETS void AxpyTerms(float* __restrict y, const float* const* w, const float* c, int q, int64_t cols) {
  const float* __restrict w0 = w[0];
  const float c0 = c[0];
  if (q == 1) {
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) y[j] = y[j] + c0 * w0[j];
    return;
  }
  const float* __restrict w1 = w[1];
  const float c1 = c[1];
  if (q == 2) {
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) y[j] = (y[j] + c0 * w0[j]) + c1 * w1[j];
    return;
  }
  const float* __restrict w2 = w[2];
  const float c2 = c[2];
  if (q == 3) {
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) y[j] = ((y[j] + c0 * w0[j]) + c1 * w1[j]) + c2 * w2[j];
    return;
  }
  const float* __restrict w3 = w[3];
  const float c3 = c[3];
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) y[j] = (((y[j] + c0 * w0[j]) + c1 * w1[j]) + c2 * w2[j]) + c3 * w3[j];
}

namespace {

// Rows of x handled together (one bit each in a uint8_t): a row of w that several of
// them need is fetched from memory once and then read from cache.
constexpr int64_t kRowBlock = 8;
// Columns of y per task: enough that a single row (the decode step) splits over the
// pool from m = 1024 on. Each needed row of w is then read as runs of 512 floats (2 KB);
// much shorter runs leave the hardware prefetcher too little to work with (256 columns
// took up to 1.5 times as long as 1024 on 4096 x 1024 at 80% zeros, one thread; 512
// about 1.1 to 1.4 times).
constexpr int64_t kColBlock = 512;
// Terms of one row of y collected before a pass over it (AxpyTerms takes up to 4).
constexpr int kGroup = 4;

// Rows of w asked for ahead of use: a row is a short stream that the hardware
// prefetcher only picks up after its first lines, and the rows needed are known.
constexpr int64_t kAhead = 8;

inline void Prefetch(const float* row, int64_t cols) {
#if defined(__GNUC__) || defined(__clang__)
  for (int64_t j = 0; j < std::min<int64_t>(cols, 64); j += 16) __builtin_prefetch(row + j);  // 4 cache lines
#else
  (void)row;
  (void)cols;
#endif
}

struct Pending {
  int q = 0;
  float c[kGroup] = {};
  const float* w[kGroup] = {};
};

// Row block blk of x [rows][n]: the inputs some row of it needs (x != 0, so NaN and
// Inf count), compacted to idx[0..count), and bits[e] = which rows need input idx[e].
// bits must be zero on entry. Returns count.
int64_t ScanBlock(const float* x, int64_t rows, int64_t n, int64_t blk, uint8_t* bits, int32_t* idx) {
  const int64_t r0 = blk * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * n;
    const uint8_t bit = static_cast<uint8_t>(1u << (r - r0));
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) bits[i] |= xr[i] != 0.0f ? bit : uint8_t{0};
  }
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {  // compacted in place: count <= i
    if (bits[i] != 0) {
      idx[count] = static_cast<int32_t>(i);
      bits[count] = bits[i];
      ++count;
    }
  }
  return count;
}

// Columns c0 .. c0 + cols of y [rows][m] for row block blk: bias (or 0), then each
// row's terms x[r][i] * w[i] in increasing input order, a pass over its part of y per
// kGroup. idx, bits and count are the block's ScanBlock result.
void MultiplyBlock(const float* x, const float* w, const float* bias, int64_t rows, int64_t n, int64_t m, int64_t blk,
                   int64_t c0, int64_t cols, const int32_t* idx, const uint8_t* bits, int64_t count, float* y) {
  const int64_t r0 = blk * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
  for (int64_t r = r0; r < r1; ++r) {
    float* yr = y + r * m + c0;
    if (bias != nullptr) {
      std::memcpy(yr, bias + c0, static_cast<size_t>(cols) * sizeof(float));
    } else {
      std::fill(yr, yr + cols, 0.0f);
    }
  }
  Pending pending[kRowBlock];
  for (int64_t e = 0; e < count; ++e) {
    const int64_t i = idx[e];
    const float* wr = w + i * m + c0;
    if (e + kAhead < count) Prefetch(w + idx[e + kAhead] * m + c0, cols);
    const unsigned b = bits[e];
    for (int64_t r = 0; r < r1 - r0; ++r) {
      if ((b >> r & 1u) == 0) continue;
      Pending& p = pending[r];
      p.c[p.q] = x[(r0 + r) * n + i];
      p.w[p.q] = wr;
      if (++p.q == kGroup) {
        AxpyTerms(y + (r0 + r) * m + c0, p.w, p.c, kGroup, cols);
        p.q = 0;
      }
    }
  }
  for (int64_t r = 0; r < r1 - r0; ++r) {
    if (pending[r].q > 0) AxpyTerms(y + (r0 + r) * m + c0, pending[r].w, pending[r].c, pending[r].q, cols);
  }
}

// The non-zero inputs of all rows (each multiplies a row of w): the set bits of every
// block's needed inputs.
int64_t InputsRead(const uint8_t* who, int64_t n, const std::vector<int64_t>& needed) {
  int64_t read = 0;
  for (size_t blk = 0; blk < needed.size(); ++blk) {
    const uint8_t* bits = who + static_cast<int64_t>(blk) * n;
    for (int64_t e = 0; e < needed[blk]; ++e) read += static_cast<int64_t>(std::bitset<8>(bits[e]).count());
  }
  return read;
}

}  // namespace

void SparseMatMulKernel::Compute(OrtKernelContext* context) const {
  Ort::KernelContext ctx(context);
  const Input x = GetInput(ctx, 0, "x", false);
  const Input w = GetInput(ctx, 1, "w", false);
  const Input bias = GetInput(ctx, 2, "bias", true);

  const size_t rank = x.shape.size();
  if (rank < 2) {
    throw OpError("x must have shape [*, n] with at least one leading dimension, got " + ShapeText(x.shape));
  }
  const int64_t n = x.shape[rank - 1];
  if (w.shape.size() != 2 || w.shape[0] != n) {
    throw OpError("w must have shape [n, m] with n = " + std::to_string(n) + " (the last dimension of x), got " +
                  ShapeText(w.shape));
  }
  const int64_t m = w.shape[1];
  if (bias.present && bias.shape != std::vector<int64_t>{m}) {
    throw OpError("bias must have shape [m] = " + ShapeText({m}) + ", got " + ShapeText(bias.shape));
  }
  std::vector<int64_t> y_shape(x.shape.begin(), x.shape.end() - 1);
  const int64_t rows = ElementCount(y_shape);
  y_shape.push_back(m);
  const Outputs out = GetOutputs(ctx, y_shape);
  if (out.stats != nullptr) {
    out.stats[0] = 0;
    out.stats[1] = rows * n;
  }
  if (rows == 0 || m == 0) return;
  float* y = out.y;

  // Per block of rows, the inputs some row of it needs (x != 0, so NaN and Inf count)
  // and which rows need each: 5 bytes per input and block, against the block's 32 of x.
  // The scan is O(n) per row against O(n * m) of work.
  if (n > std::numeric_limits<int32_t>::max()) {
    throw OpError("x has " + std::to_string(n) + " inputs per row, more than this op indexes (2^31 - 1)");
  }
  const int64_t row_blocks = CeilDiv(rows, kRowBlock);
  std::vector<int32_t> index(static_cast<size_t>(row_blocks * n));
  std::vector<uint8_t> who(static_cast<size_t>(row_blocks * n), 0);
  std::vector<int64_t> needed(static_cast<size_t>(row_blocks), 0);
  auto scan = [&](size_t task) noexcept {
    const int64_t blk = static_cast<int64_t>(task);
    needed[static_cast<size_t>(blk)] = ScanBlock(x.data, rows, n, blk, who.data() + blk * n, index.data() + blk * n);
  };
  ParallelTasks(ctx, static_cast<size_t>(row_blocks), scan);
  if (out.stats != nullptr) out.stats[0] = InputsRead(who.data(), n, needed);

  const int64_t col_block = std::min(m, kColBlock);
  const int64_t col_blocks = CeilDiv(m, col_block);
  auto body = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task);
    const int64_t blk = t % row_blocks;
    const int64_t c0 = (t / row_blocks) * col_block, cols = std::min(m - c0, col_block);
    MultiplyBlock(x.data, w.data, bias.present ? bias.data : nullptr, rows, n, m, blk, c0, cols, index.data() + blk * n,
                  who.data() + blk * n, needed[static_cast<size_t>(blk)], y);
  };
  ParallelTasks(ctx, static_cast<size_t>(row_blocks * col_blocks), body);
}

}  // namespace exprune
