// ExPruneConvRelu: finishes the survivors of a 1-D or 2-D Conv layer (group 1) whose
// first k input channels were already convolved into `partial` (docs/custom_ops.md).
#pragma once

#include <string>
#include <vector>

#include "conv_attrs.h"
#include "domain.h"
#include "kernel_util.h"
#include "prune_op.h"
#include "scratch.h"

namespace exprune {

class ConvReluKernel : public PruneKernel<ConvReluKernel> {
 public:
  ConvReluKernel(const OrtKernelInfo* info, std::string label);
  void Compute(OrtKernelContext* context) const;

 private:
  void PackConstantWeights(const OrtKernelInfo* info) noexcept;

  ConvAttrs conv_;
  // w_tail repacked for the sparse path (RepackTaps in conv_relu_plan.cc) when it is a
  // constant initializer: used while the input is that same tensor.
  AlignedFloats packed_;
  const float* packed_from_ = nullptr;
  std::vector<int64_t> packed_shape_;
  scratch::User scratch_user_;  // the calls lease their masks and copies (scratch.h)
};

struct ConvReluOp : PruneOp<ConvReluOp, ConvReluKernel> {
  static constexpr const char* kName = kConvReluOp;
};

}  // namespace exprune
