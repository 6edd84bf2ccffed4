// ExPruneDenseRelu: finishes the survivors of a Gemm/MatMul layer whose first k input
// units were already summed into `partial` (see docs/custom_ops.md).
#pragma once

#include <string>

#include "domain.h"
#include "kernel_util.h"
#include "prune_op.h"

namespace exprune {

class DenseReluKernel : public PruneKernel<DenseReluKernel> {
 public:
  DenseReluKernel(const OrtKernelInfo* info, std::string label);
  void Compute(OrtKernelContext* context) const;
};

struct DenseReluOp : PruneOp<DenseReluOp, DenseReluKernel> {
  static constexpr const char* kName = kDenseReluOp;
};

}  // namespace exprune
