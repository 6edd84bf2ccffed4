#include "conv_relu.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "conv_attrs.h"
#include "conv_relu_impl.h"

namespace exprune {

using conv_relu::ConvArgs;
using conv_relu::Geometry;

ConvReluKernel::ConvReluKernel(const OrtKernelInfo* info, std::string label)
    : PruneKernel(info, std::move(label)), conv_(ReadConvAttrs(info)) {
  // group and kernel_shape are accepted so that a Conv's attributes can be copied
  // over unchanged; they only have to agree with what the op does.
  if (conv_.group != 1) {
    throw OpError("attribute group = " + std::to_string(conv_.group) + " is not supported (only 1)");
  }
  PackConstantWeights(info);
}

// When w_tail is a constant initializer, its repacking for the sparse path is done
// once here instead of on every run. Anything unexpected just leaves it to Compute,
// which validates the inputs; nothing is packed when nothing can be pruned.
void ConvReluKernel::PackConstantWeights(const OrtKernelInfo* info) noexcept {
  if (!attrs_.CanPrune()) return;
  try {
    int is_constant = 0;
    const Ort::ConstValue w = Ort::ConstKernelInfo(info).GetTensorConstantInput(2, &is_constant);
    if (!is_constant || !w || !w.IsTensor()) return;
    const Ort::TensorTypeAndShapeInfo type = w.GetTensorTypeAndShapeInfo();
    if (type.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return;
    std::vector<int64_t> shape = type.GetShape();
    if ((shape.size() != 3 && shape.size() != 4) ||
        std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 1; })) {
      return;
    }
    const int64_t taps = ElementCount(std::vector<int64_t>(shape.begin() + 2, shape.end()));
    const int64_t cpad = CeilDiv(shape[1], conv_relu::kLineFloats) * conv_relu::kLineFloats;
    packed_.resize(static_cast<size_t>(shape[0] * taps * cpad));
    conv_relu::RepackTaps(w.GetTensorData<float>(), shape[1], taps, cpad, 0, shape[0], packed_.data());
    packed_from_ = w.GetTensorData<float>();
    packed_shape_ = std::move(shape);
  } catch (...) {
    packed_.clear();
    packed_from_ = nullptr;
  }
}

void ConvReluKernel::Compute(OrtKernelContext* context) const {
  Ort::KernelContext ctx(context);
  const Input partial = GetInput(ctx, 0, "partial", false);
  const Input x = GetInput(ctx, 1, "x", false);
  const Input w = GetInput(ctx, 2, "w_tail", false);
  const Input bias = GetInput(ctx, 3, "bias", false);
  const Input res = GetInput(ctx, 4, "residual", true);

  const size_t rank = x.shape.size();
  if (rank != 3 && rank != 4) {
    throw OpError("x must have shape [N, C, W] or [N, C, H, W] (spatial rank 1 or 2), got " + ShapeText(x.shape));
  }
  const size_t sr = rank - 2;
  const int64_t batch = x.shape[0], channels = x.shape[1], k = attrs_.k;
  if (partial.shape.size() != rank || partial.shape[0] != batch) {
    throw OpError("partial must have shape [N, O, *OS] with the rank and batch of x " + ShapeText(x.shape) + ", got " +
                  ShapeText(partial.shape));
  }
  if (k >= channels) {
    throw OpError("attribute k = " + std::to_string(k) + " must be < n = " + std::to_string(channels) +
                  " (the channels of x)");
  }
  const int64_t outs = partial.shape[1], tail = channels - k;
  if (w.shape.size() != rank || w.shape[0] != outs || w.shape[1] != tail ||
      std::any_of(w.shape.begin() + 2, w.shape.end(), [](int64_t d) { return d < 1; })) {
    throw OpError("w_tail must have shape [O, C-k, *K] with O = " + std::to_string(outs) + ", C-k = " +
                  std::to_string(tail) + " and " + std::to_string(sr) + " kernel dims >= 1, got " + ShapeText(w.shape));
  }
  if (bias.shape != std::vector<int64_t>{outs}) {
    throw OpError("bias must have shape [O] = " + ShapeText({outs}) + ", got " + ShapeText(bias.shape));
  }
  if (res.present && res.shape != partial.shape) {
    throw OpError("residual must have the shape of partial " + ShapeText(partial.shape) + ", got " +
                  ShapeText(res.shape));
  }
  const std::vector<Axis> axes =
      ResolveAxes(conv_, std::vector<int64_t>(x.shape.begin() + 2, x.shape.end()),
                  std::vector<int64_t>(w.shape.begin() + 2, w.shape.end()), "w_tail", w.shape);
  std::vector<int64_t> implied{batch, outs};
  for (const Axis& a : axes) implied.push_back(a.out);
  if (implied != partial.shape) {
    throw OpError("x " + ShapeText(x.shape) + ", w_tail " + ShapeText(w.shape) +
                  " and the strides/pads/dilations/auto_pad attributes give output shape " + ShapeText(implied) +
                  ", but partial has shape " + ShapeText(partial.shape));
  }

  CheckThresholdCount(attrs_, outs);
  const RuleInputs extra = GetRuleInputs(ctx, attrs_.rule, partial.shape, outs);
  const Outputs out = GetOutputs(ctx, partial.shape);

  Geometry g;
  g.batch = batch;
  g.tail = tail;
  g.outs = outs;
  g.h = sr == 2 ? axes[0] : Axis{};
  g.w = axes[sr - 1];
  const int64_t taps = g.h.kernel * g.w.kernel;
  const bool packed = packed_from_ != nullptr && packed_from_ == w.data && packed_shape_ == w.shape;
  const ConvArgs args{partial.data,
                      packed ? packed_.data() : nullptr,
                      x.data + k * g.h.in * g.w.in,
                      channels * g.h.in * g.w.in,
                      w.data,
                      bias.data,
                      res.present ? res.data : nullptr,
                      out.y,
                      static_cast<double>(channels) / static_cast<double>(k),
                      attrs_.threshold,
                      attrs_.thresholds.empty() ? nullptr : attrs_.thresholds.data(),
                      attrs_.clip_max,
                      attrs_.rule,
                      static_cast<double>(k * taps),
                      static_cast<double>(channels * taps),
                      attrs_.z_crit,
                      extra};
  const int64_t pruned = conv_relu::FinishConv(ctx, g, args);

  if (out.stats != nullptr) {
    out.stats[0] = pruned;
    out.stats[1] = partial.size;
  }
}

}  // namespace exprune
