// The onnxruntime-facing description shared by the ops: eight float inputs (the last
// four optional: residual, then the rules' partial_sq, w_pos_sum, w_pos_norm), y plus
// an optional int64 stats output, kernels created and run through the
// status-returning V2 entry points so that every failure is a status.
#pragma once

#include <string>
#include <utility>

#include "domain.h"
#include "kernel_util.h"

namespace exprune {

// What every kernel holds: its node label for messages and the common attributes.
// Derived supplies `void Compute(OrtKernelContext*) const`, which may throw: ComputeV2
// turns anything it throws into a status.
template <typename Derived>
class PruneKernel {
 public:
  PruneKernel(const OrtKernelInfo* info, std::string label) : label_(std::move(label)), attrs_(ReadPruneAttrs(info)) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    return Guarded(label_, [&] { static_cast<const Derived*>(this)->Compute(context); });
  }

 protected:
  std::string label_;
  PruneAttrs attrs_;
};

// Op supplies `static constexpr const char* kName`; Kernel is constructed from
// (info, label) and has `OrtStatusPtr ComputeV2(OrtKernelContext*) noexcept`. YType is
// the element type of output 0 (the class index of the head op is int64).
template <typename Op, typename Kernel, ONNXTensorElementDataType YType = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT>
struct PruneOp : Ort::CustomOpBase<Op, Kernel, /*WithStatus=*/true> {
  PruneOp() {
    this->start_ver_ = kDomainVersion;
    this->end_ver_ = kDomainVersion;
  }

  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const noexcept {
    *kernel = nullptr;
    std::string label;
    try {
      label = NodeLabel(Op::kName, info);
    } catch (...) {
      return ErrorStatus(ORT_FAIL, Op::kName, "out of memory");
    }
    return Guarded(label, [&] { *kernel = new Kernel(info, label); });
  }

  const char* GetName() const { return Op::kName; }

  // partial, x, w_tail, bias, then the optional residual, partial_sq, w_pos_sum,
  // w_pos_norm; an absent optional input before a present one has an empty name.
  size_t GetInputTypeCount() const { return 8; }
  ONNXTensorElementDataType GetInputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index >= 4 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }

  size_t GetOutputTypeCount() const { return 2; }  // y, stats
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : YType;
  }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const {
    return index == 1 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
};

}  // namespace exprune
