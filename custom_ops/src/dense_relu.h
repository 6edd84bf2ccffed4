// ExPruneDenseRelu: finishes the survivors of a Gemm/MatMul layer whose first k input
// units were already summed into `partial` (see docs/custom_ops.md).
#pragma once

#include <string>
#include <vector>

#include "domain.h"
#include "kernel_util.h"
#include "prune_op.h"

namespace exprune {

class DenseReluKernel : public PruneKernel<DenseReluKernel> {
 public:
  DenseReluKernel(const OrtKernelInfo* info, std::string label);
  void Compute(OrtKernelContext* context) const;

 private:
  // Optional attribute tail_units: the units of x (in x's own order) that w_tail's
  // columns multiply. Empty: the tail is x's units k..n-1.
  std::vector<int64_t> tail_units_;
  size_t largest_ = 0;  // position of the largest unit in tail_units_
};

struct DenseReluOp : PruneOp<DenseReluOp, DenseReluKernel> {
  static constexpr const char* kName = kDenseReluOp;
};

}  // namespace exprune
