// ExPruneConvRelu: finishes the survivors of a 1-D or 2-D Conv layer (group 1) whose
// first k input channels were already convolved into `partial` (docs/custom_ops.md).
#pragma once

#include <string>
#include <vector>

#include "domain.h"
#include "kernel_util.h"
#include "prune_op.h"

namespace exprune {

class ConvReluKernel {
 public:
  ConvReluKernel(const OrtKernelInfo* info, std::string label);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    return Guarded(label_, [&] { Compute(context); });
  }

 private:
  void Compute(OrtKernelContext* context) const;

  std::string label_;
  PruneAttrs attrs_;
  std::string auto_pad_ = "NOTSET";
  // As given on the node; empty when absent. Lengths are checked against the
  // input's spatial rank at run time.
  std::vector<int64_t> kernel_shape_, strides_, pads_, dilations_;
};

struct ConvReluOp : PruneOp<ConvReluOp, ConvReluKernel> {
  static constexpr const char* kName = kConvReluOp;
};

}  // namespace exprune
