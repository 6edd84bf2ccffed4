#include "sparse_conv.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "sparse_conv_lists.h"
#include "sparse_conv_run.h"

namespace exprune {

namespace {
// Entry offsets and list positions are int32 (half the bytes of the lists).
constexpr int64_t kMaxIndex = std::numeric_limits<int32_t>::max() / 2;
constexpr int64_t kMaxColumns = int64_t{1} << 24;

// A layer of no input channels: every output is its bias (plus the residual), activated, as
// onnxruntime's Conv gives it. The tiles would store sums no channel ever started.
void WithoutInputs(const sparse_conv::Layer& l) {
  const int64_t plane = l.h.out * l.w.out;
  for (int64_t n = 0; n < l.batch; ++n) {
    for (int64_t m = 0; m < l.outs; ++m) {
      const int64_t at = (n * l.outs + m) * plane;
      for (int64_t p = 0; p < plane; ++p) {
        float v = 0.0f + (l.bias != nullptr ? l.bias[m] : 0.0f);
        if (l.res != nullptr) v += l.res[at + p];
        l.y[at + p] = l.relu ? Activate(v, l.clip_max) : v;
      }
    }
  }
}

}  // namespace

SparseConvKernel::SparseConvKernel(const OrtKernelInfo* info, std::string label)
    : label_(std::move(label)), conv_(ReadConvAttrs(info)) {
  std::string activation = "none";
  ReadAttr(info, "activation", &activation);
  if (activation != "none" && activation != "relu") {
    throw OpError("attribute activation = '" + activation + "' is not one of none, relu");
  }
  relu_ = activation == "relu";
  if (ReadAttr(info, "clip_max", &clip_max_)) {
    if (!(clip_max_ >= 0.0f)) throw OpError("attribute clip_max = " + std::to_string(clip_max_) + " must be >= 0");
    if (!relu_) throw OpError("attribute clip_max is only meaningful with activation = relu");
  }
  BlockConstantWeights(info);
}

// When w is a constant initializer, a copy blocked by output-channel block
// ([group][block][c][ky][kx][lane], zero-padded lanes) is made once here: a block's
// weights are then contiguous, without the cache-set conflicts of w's long channel
// stride (M/group * taps floats). Anything unexpected leaves w as it is; Compute
// validates the inputs either way.
void SparseConvKernel::BlockConstantWeights(const OrtKernelInfo* info) noexcept {
  try {
    int is_constant = 0;
    const Ort::ConstValue w = Ort::ConstKernelInfo(info).GetTensorConstantInput(1, &is_constant);
    if (!is_constant || !w || !w.IsTensor()) return;
    const Ort::TensorTypeAndShapeInfo type = w.GetTensorTypeAndShapeInfo();
    if (type.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return;
    std::vector<int64_t> shape = type.GetShape();
    if ((shape.size() != 3 && shape.size() != 4) ||
        std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 1; }) || shape[0] % conv_.group != 0) {
      return;
    }
    // A 1-D conv's w [C, KW, M/group] is a 2-D one's with KH = 1.
    const int64_t kh = shape.size() == 4 ? shape[1] : 1, kw = shape[shape.size() - 2], mg = shape.back();
    const int64_t taps = kh * kw, cg = shape[0] / conv_.group;
    const sparse_conv::Shape& tile = sparse_conv::PickShape(sparse_conv::Select(), mg, 1);
    const int64_t lanes = int64_t{tile.nv} * sparse_conv::Select().lanes, blocks = CeilDiv(mg, lanes);
    // Entry offsets reach cg * taps * lanes, up to 16 / mg times w's own (int32: kMaxIndex).
    if (cg * taps * lanes > kMaxIndex) return;
    const float* src = w.GetTensorData<float>();
    blocked_.assign(static_cast<size_t>(conv_.group * blocks * cg * taps * lanes), 0.0f);
    for (int64_t g = 0; g < conv_.group; ++g) {
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t n = std::min(lanes, mg - b * lanes);
        for (int64_t c = 0; c < cg; ++c) {
          for (int64_t t = 0; t < taps; ++t) {
            const float* from = src + ((g * cg + c) * taps + t) * mg + b * lanes;
            std::copy(from, from + n, blocked_.data() + (((g * blocks + b) * cg + c) * taps + t) * lanes);
          }
        }
      }
    }
    if (conv_.group == 1) sparse_conv_amx::PackWeights(src, shape[0], kh, kw, mg, &amx_);
    blocked_from_ = src;
    blocked_shape_ = std::move(shape);
  } catch (...) {
    blocked_.clear();
    blocked_from_ = nullptr;
    amx_.data.clear();
  }
}

void SparseConvKernel::Compute(OrtKernelContext* context) const {
  Ort::KernelContext ctx(context);
  const Input x = GetInput(ctx, 0, "x", false);
  const Input w = GetInput(ctx, 1, "w", false);
  const Input bias = GetInput(ctx, 2, "bias", true);
  const Input res = GetInput(ctx, 3, "residual", true);

  const size_t rank = x.shape.size();
  if (rank != 3 && rank != 4) {
    throw OpError("x must have shape [N, C, W] or [N, C, H, W] (spatial rank 1 or 2), got " + ShapeText(x.shape));
  }
  const size_t sr = rank - 2;
  const int64_t channels = x.shape[1], groups = conv_.group;
  if (w.shape.size() != rank || w.shape[0] != channels ||
      std::any_of(w.shape.begin() + 1, w.shape.end() - 1, [](int64_t d) { return d < 1; })) {
    throw OpError("w must have shape [C, *K, M/group] with C = " + std::to_string(channels) +
                  " (the channels of x) and " + std::to_string(sr) + " kernel dims >= 1, got " + ShapeText(w.shape));
  }
  if (channels % groups != 0) {
    throw OpError("attribute group = " + std::to_string(groups) + " does not divide the " + std::to_string(channels) +
                  " channels of x");
  }
  const std::vector<Axis> axes =
      ResolveAxes(conv_, std::vector<int64_t>(x.shape.begin() + 2, x.shape.end()),
                  std::vector<int64_t>(w.shape.begin() + 1, w.shape.end() - 1), "w", w.shape);
  sparse_conv::Layer l{};
  l.batch = x.shape[0];
  l.channels = channels;
  l.groups = groups;
  l.cg = channels / groups;
  l.mg = w.shape.back();
  l.outs = l.mg * groups;
  l.h = sr == 2 ? axes[0] : Axis{};  // a 1-D conv runs as a 2-D one of unit height
  l.w = axes[sr - 1];
  l.x = x.data;
  l.bias = bias.present ? bias.data : nullptr;
  l.res = res.present ? res.data : nullptr;
  l.relu = relu_;
  l.clip_max = clip_max_;
  l.pooled = &pooled_;
  std::vector<int64_t> y_shape{l.batch, l.outs, l.h.out, l.w.out};
  if (sr == 1) y_shape.erase(y_shape.begin() + 2);
  if (bias.present && bias.shape != std::vector<int64_t>{l.outs}) {
    throw OpError("bias must have shape [M] = " + ShapeText({l.outs}) + ", got " + ShapeText(bias.shape));
  }
  if (res.present && res.shape != y_shape) {
    throw OpError("residual must have the output's shape " + ShapeText(y_shape) + ", got " + ShapeText(res.shape));
  }
  if (w.size > kMaxIndex ||
      (l.cg + 1) * (l.w.in + l.w.pad + (l.w.kernel - 1) * l.w.dilation + l.w.out + 64) > kMaxIndex) {
    throw OpError("w " + ShapeText(w.shape) + " or a row of x " + ShapeText(x.shape) +
                  " has more elements than this op indexes (2^30)");
  }
  const Outputs out = GetOutputs(ctx, y_shape);
  l.y = out.y;
  int64_t read = 0;
  if (ElementCount(y_shape) > 0) {
    const sparse_conv::Shape& shape = sparse_conv::PickShape(sparse_conv::Select(), l.mg, l.w.out);
    // A stride far past the row, with an end pad that lets it step (a tampered model's), spans
    // columns the lists would hold counts for: 2^24 of them took 2.3 GB for two outputs.
    if (sparse_conv::Lists::Columns(l, shape) > kMaxColumns) {
      throw OpError("a row of x " + ShapeText(x.shape) + " read at stride " + std::to_string(l.w.stride) +
                    " spans more padded columns than this op lists (2^24)");
    }
    l.blocked = blocked_from_ != nullptr && blocked_from_ == w.data && blocked_shape_ == w.shape;
    l.wt = l.blocked ? blocked_.data() : w.data;
    l.tap = l.blocked ? int64_t{shape.nv} * sparse_conv::Select().lanes : l.mg;
    l.chan_step = l.h.kernel * l.w.kernel * l.tap;
    l.amx = l.blocked && amx_.ready() ? &amx_ : nullptr;
    if (l.cg == 0) {
      WithoutInputs(l);
    } else {
      read = sparse_conv::RunBatch(ctx, l, shape);
    }
  }
  if (out.stats != nullptr) {
    out.stats[0] = read;
    out.stats[1] = x.size;
  }
}

}  // namespace exprune
