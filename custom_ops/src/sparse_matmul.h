// ExPruneSparseMatMul: y = x @ w (+ bias) that reads only the rows of w whose input is
// non-zero, for the layer after an early-exit op, whose output is mostly exact zeros
// (docs/custom_ops.md).
#pragma once

#include <string>
#include <utility>

#include "domain.h"
#include "kernel_util.h"

namespace exprune {

class SparseMatMulKernel {
 public:
  explicit SparseMatMulKernel(std::string label) : label_(std::move(label)) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    return Guarded(label_, [&] { Compute(context); });
  }

 private:
  void Compute(OrtKernelContext* context) const;
  std::string label_;
};

// x, w and an optional bias in; y and the optional int64 stats [inputs read, inputs]
// out. No attributes.
struct SparseMatMulOp : Ort::CustomOpBase<SparseMatMulOp, SparseMatMulKernel, /*WithStatus=*/true> {
  SparseMatMulOp() {
    start_ver_ = kDomainVersion;
    end_ver_ = kDomainVersion;
  }

  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const noexcept {
    *kernel = nullptr;
    std::string label;
    try {
      label = NodeLabel(kSparseMatMulOp, info);
    } catch (...) {
      return ErrorStatus(ORT_FAIL, kSparseMatMulOp, "out of memory");
    }
    return Guarded(label, [&] { *kernel = new SparseMatMulKernel(label); });
  }

  const char* GetName() const { return kSparseMatMulOp; }

  size_t GetInputTypeCount() const { return 3; }  // x, w, bias
  ONNXTensorElementDataType GetInputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }

  size_t GetOutputTypeCount() const { return 2; }  // y, stats
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const {
    return index == 1 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
};

}  // namespace exprune
