#include "conv_attrs.h"

#include <algorithm>

namespace exprune {

namespace {

// Attribute values past this are refused: no input axis is that long, and the products of
// such values with sizes overflowed (a stride of 2^32 crashed the op).
constexpr int64_t kMaxAttr = int64_t{1} << 30;

// An axis with one output never steps, so its stride is 1: the same arithmetic, while the
// kernels size their column lists and stride phases by the stride (a tampered stride of
// 32768 on an 8-wide input took 9.5 GB).
Axis SingleStep(Axis a) {
  if (a.out == 1) a.stride = 1;
  return a;
}

void CheckRange(const char* name, const std::vector<int64_t>& v, int64_t least) {
  for (int64_t x : v) {
    if (x < least || x > kMaxAttr) {
      throw OpError(std::string("attribute ") + name + " " + ShapeText(v) + " must be from " + std::to_string(least) +
                    " to 2^30");
    }
  }
}

// Output size and leading pad of one axis, as ONNX Conv defines them. SAME pads are
// derived from the actual input size, so they are right for any input shape.
Axis ResolveAxis(size_t d, int64_t in, int64_t kernel, int64_t stride, int64_t dilation, int64_t pad_begin,
                 int64_t pad_end, const std::string& auto_pad) {
  Axis a{in, kernel, stride, dilation, 0, 0};
  const int64_t span = (kernel - 1) * dilation + 1;
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    a.out = CeilDiv(in, stride);
    const int64_t total = std::max<int64_t>(0, (a.out - 1) * stride + span - in);
    a.pad = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    return SingleStep(a);
  }
  if (auto_pad == "VALID") pad_begin = pad_end = 0;
  const int64_t room = in + pad_begin + pad_end - span;
  if (room < 0) {
    throw OpError("spatial axis " + std::to_string(d) + ": input size " + std::to_string(in) + " plus pads (" +
                  std::to_string(pad_begin) + ", " + std::to_string(pad_end) +
                  ") is smaller than the dilated kernel extent " + std::to_string(span));
  }
  a.pad = pad_begin;
  a.out = room / stride + 1;
  return SingleStep(a);
}

void CheckCount(const char* name, const std::vector<int64_t>& v, size_t want, size_t rank) {
  if (!v.empty() && v.size() != want) {
    throw OpError(std::string("attribute ") + name + " has " + std::to_string(v.size()) +
                  " values; the input has spatial rank " + std::to_string(rank) + " and needs " + std::to_string(want));
  }
}

}  // namespace

ConvAttrs ReadConvAttrs(const OrtKernelInfo* info) {
  ConvAttrs a;
  ReadAttr(info, "auto_pad", &a.auto_pad);
  if (a.auto_pad != "NOTSET" && a.auto_pad != "SAME_UPPER" && a.auto_pad != "SAME_LOWER" && a.auto_pad != "VALID") {
    throw OpError("attribute auto_pad = '" + a.auto_pad + "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
  }
  ReadAttr(info, "group", &a.group);
  if (a.group < 1) throw OpError("attribute group = " + std::to_string(a.group) + " must be >= 1");
  ReadAttr(info, "kernel_shape", &a.kernel_shape);
  ReadAttr(info, "strides", &a.strides);
  ReadAttr(info, "dilations", &a.dilations);
  if (ReadAttr(info, "pads", &a.pads) && a.auto_pad != "NOTSET") {
    throw OpError("attributes pads and auto_pad = " + a.auto_pad + " cannot be given together (as on ONNX Conv)");
  }
  CheckRange("strides", a.strides, 1);
  CheckRange("dilations", a.dilations, 1);
  CheckRange("pads", a.pads, 0);
  return a;
}

std::vector<Axis> ResolveAxes(const ConvAttrs& a, const std::vector<int64_t>& in, const std::vector<int64_t>& kernel,
                              const std::string& w_name, const std::vector<int64_t>& w_shape) {
  const size_t sr = in.size();
  if (!a.kernel_shape.empty() && a.kernel_shape != kernel) {
    throw OpError("attribute kernel_shape " + ShapeText(a.kernel_shape) + " does not match " + w_name + " " +
                  ShapeText(w_shape));
  }
  CheckCount("strides", a.strides, sr, sr);
  CheckCount("dilations", a.dilations, sr, sr);
  CheckCount("pads", a.pads, 2 * sr, sr);
  std::vector<Axis> axes;
  const bool explicit_pads = !a.pads.empty();
  for (size_t d = 0; d < sr; ++d) {
    axes.push_back(ResolveAxis(d, in[d], kernel[d], a.strides.empty() ? 1 : a.strides[d],
                               a.dilations.empty() ? 1 : a.dilations[d], explicit_pads ? a.pads[d] : 0,
                               explicit_pads ? a.pads[sr + d] : 0, a.auto_pad));
  }
  return axes;
}

}  // namespace exprune
