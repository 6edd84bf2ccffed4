// ExPruneArgmaxHead: the class index of a prediction head z = h W + b whose only use
// is an arg-max, from the first k hidden units when one class clearly leads, else
// from the classes still in contention (docs/custom_ops.md).
#pragma once

#include <string>

#include "domain.h"
#include "kernel_util.h"
#include "prune_op.h"

namespace exprune {

class ArgmaxHeadKernel : public PruneKernel<ArgmaxHeadKernel> {
 public:
  ArgmaxHeadKernel(const OrtKernelInfo* info, std::string label);
  void Compute(OrtKernelContext* context) const;

 private:
  bool keepdims_ = false;
};

struct ArgmaxHeadOp : PruneOp<ArgmaxHeadOp, ArgmaxHeadKernel, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64> {
  static constexpr const char* kName = kArgmaxHeadOp;
};

}  // namespace exprune
