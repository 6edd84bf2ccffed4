// ExPruneSparseConv: a 1-D or 2-D Conv (+ bias, + residual, then none/Relu/Clip(0, c))
// that visits only the non-zero values of its input, for layers fed by a ReLU
// (docs/custom_ops.md). The weights come repacked as w[C, KH, KW, M/group] (w[C, KW,
// M/group] for a 1-D conv).
#pragma once

#include <atomic>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "conv_attrs.h"
#include "domain.h"
#include "kernel_util.h"
#include "scratch.h"
#include "sparse_conv_amx.h"

namespace exprune {

class SparseConvKernel {
 public:
  SparseConvKernel(const OrtKernelInfo* info, std::string label);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept {
    return Guarded(label_, [&] { Compute(context); });
  }

 private:
  void Compute(OrtKernelContext* context) const;
  void BlockConstantWeights(const OrtKernelInfo* info) noexcept;

  std::string label_;
  ConvAttrs conv_;
  bool relu_ = false;
  float clip_max_ = std::numeric_limits<float>::infinity();
  // w blocked by output-channel block when it is a constant initializer: used while
  // the input is that same tensor.
  AlignedFloats blocked_;
  const float* blocked_from_ = nullptr;
  std::vector<int64_t> blocked_shape_;
  // The same weights for the tile path, when it runs here and there is one group.
  sparse_conv_amx::Weights amx_;
  // Whether a call's tasks ran on more than one thread (onnxruntime tells a kernel nothing
  // of its pool): from then on images run in one wave (sparse_conv_run.cc, kMaxWaves).
  mutable std::atomic<bool> pooled_{false};
  scratch::User scratch_user_;  // the calls lease their lists and planes (scratch.h)
};

// x, w, then the optional bias and residual in; y and the optional int64 stats out.
struct SparseConvOp : Ort::CustomOpBase<SparseConvOp, SparseConvKernel, /*WithStatus=*/true> {
  SparseConvOp() {
    start_ver_ = kDomainVersion;
    end_ver_ = kDomainVersion;
  }

  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const noexcept {
    *kernel = nullptr;
    std::string label;
    try {
      label = NodeLabel(kSparseConvOp, info);
    } catch (...) {
      return ErrorStatus(ORT_FAIL, kSparseConvOp, "out of memory");
    }
    return Guarded(label, [&] { *kernel = new SparseConvKernel(info, label); });
  }

  const char* GetName() const { return kSparseConvOp; }

  size_t GetInputTypeCount() const { return 4; }  // x, w, bias, residual
  ONNXTensorElementDataType GetInputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index >= 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
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
