// The stages of ExPruneDenseRelu (dense_relu.cc): DenseReluKernel::Compute checks the
// inputs and allocates the outputs, then runs these stages over raw pointers and
// sizes (dense_relu_impl.cc).
#pragma once

#include <cstdint>

#include "kernel_util.h"

namespace exprune {
namespace dense_relu {

// One call's operands, all [rows][...] with rows = the leading dimensions flattened.
struct DenseArgs {
  const float* partial;  // [rows][outs]
  const float* tail_x;   // row m's tail inputs: tail_x + m * x_stride, `tail` contiguous floats
  int64_t x_stride;
  const float* w;     // w_tail [outs][tail]
  const float* bias;  // [outs]
  const float* res;   // [rows][outs], or null when absent
  float* y;           // [rows][outs]
  int64_t rows, outs, tail;
  double ratio, threshold;
  const float* per_output;  // per-output thresholds, or null: `threshold` for all
  double t_k, t_n, z_crit;  // statstest: terms of the partial and of the full sum; z_crit
  float clip_max;
  Rule rule;
  RuleInputs extra;     // the rule's inputs 5..7 (kernel_util.h)
  const float* xmax;    // certified: per row, else null
  const double* xnorm;  // certified: per row, else null
};

// gathered[m][j] = x[m][units[j]] for rows m < rows of x [rows][n].
void GatherTail(const Ort::KernelContext& ctx, const float* x, int64_t rows, int64_t n, const int64_t* units,
                int64_t tail, float* gathered);

// Certified: the statistics of each row's tail inputs (TailStats), shared by all outputs.
void RowTailStats(const Ort::KernelContext& ctx, const float* tail_x, int64_t x_stride, int64_t rows, int64_t tail,
                  float* xmax, double* xnorm);

// Decides every output, writes 0 where pruned and finishes the survivors. Returns
// the number of pruned outputs.
int64_t FinishDense(const Ort::KernelContext& ctx, const DenseArgs& a);

}  // namespace dense_relu
}  // namespace exprune
