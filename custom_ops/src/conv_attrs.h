// The attributes ONNX Conv has (auto_pad, kernel_shape, strides, pads, dilations,
// group), read and checked once for every conv op of the library (ExPruneConvRelu,
// ExPruneSparseConv), and the output geometry they give for an input shape.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernel_util.h"

namespace exprune {

// One spatial axis of the convolution. The defaults describe the unit height axis
// that lets a 1-D conv run through a 2-D loop.
struct Axis {
  int64_t in = 1, kernel = 1, stride = 1, dilation = 1, pad = 0, out = 1;
};

struct ConvAttrs {
  std::string auto_pad = "NOTSET";
  // As given on the node; empty when absent. Lengths are checked against the input's
  // spatial rank by ResolveAxes.
  std::vector<int64_t> kernel_shape, strides, pads, dilations;
  int64_t group = 1;
};

// Reads the attributes and checks what can be checked without the inputs: auto_pad's
// value, pads not given with auto_pad, strides/dilations in [1, 2^30], pads in [0, 2^30],
// group >= 1.
ConvAttrs ReadConvAttrs(const OrtKernelInfo* info);

// The axes of an input with spatial sizes `in` and a kernel of spatial sizes `kernel`
// (both of the input's spatial rank): output sizes and leading pads as ONNX Conv
// defines them; an axis of one output has stride 1 (it never steps). Throws when
// kernel_shape disagrees with `kernel` (named `w_name` in the message), an attribute has
// the wrong length, or an axis is smaller than its kernel.
std::vector<Axis> ResolveAxes(const ConvAttrs& a, const std::vector<int64_t>& in, const std::vector<int64_t>& kernel,
                              const std::string& w_name, const std::vector<int64_t>& w_shape);

inline int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

}  // namespace exprune
