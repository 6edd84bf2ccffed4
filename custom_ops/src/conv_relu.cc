#include "conv_relu.h"

#include <algorithm>
#include <numeric>
#include <utility>

namespace exprune {

namespace {

// Multiply-adds per pool task if nothing were pruned (see dense_relu.cc).
constexpr int64_t kTaskWork = 32768;

// One spatial axis of the convolution. The defaults describe the unit height axis
// that lets a 1-D conv run through the 2-D loop.
struct Axis {
  int64_t in = 1, kernel = 1, stride = 1, dilation = 1, pad = 0, out = 1;
};

// Output size and leading pad of one axis, as ONNX Conv defines them. SAME pads are
// derived from the actual input size, so they are right for any input shape.
Axis ResolveAxis(size_t d, int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                 int64_t pad_begin, int64_t pad_end, const std::string& auto_pad) {
  Axis a{in, kernel, stride, dilation, 0, 0};
  const int64_t span = (kernel - 1) * dilation + 1;
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    a.out = CeilDiv(in, stride);
    const int64_t total = std::max<int64_t>(0, (a.out - 1) * stride + span - in);
    a.pad = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    return a;
  }
  if (auto_pad == "VALID") pad_begin = pad_end = 0;
  const int64_t room = in + pad_begin + pad_end - span;
  if (room < 0) {
    throw OpError("spatial axis " + std::to_string(d) + ": input size " + std::to_string(in) +
                  " plus pads (" + std::to_string(pad_begin) + ", " + std::to_string(pad_end) +
                  ") is smaller than the dilated kernel extent " + std::to_string(span));
  }
  a.pad = pad_begin;
  a.out = room / stride + 1;
  return a;
}

// For every output position along an axis: the first input index its window starts
// at and the range of taps that fall inside the input (the rest read padding).
struct Taps {
  std::vector<int64_t> start, lo, hi;
};

Taps TapRanges(const Axis& a) {
  Taps t;
  t.start.resize(a.out);
  t.lo.resize(a.out);
  t.hi.resize(a.out);
  for (int64_t o = 0; o < a.out; ++o) {
    const int64_t s = o * a.stride - a.pad;
    const int64_t lo = s >= 0 ? 0 : CeilDiv(-s, a.dilation);
    const int64_t hi = s < a.in ? std::min(a.kernel, (a.in - 1 - s) / a.dilation + 1) : 0;
    t.start[o] = s;
    t.lo[o] = std::min(lo, a.kernel);
    t.hi[o] = std::max(hi, t.lo[o]);
  }
  return t;
}

void CheckCount(const char* name, const std::vector<int64_t>& v, size_t want, size_t rank) {
  if (!v.empty() && v.size() != want) {
    throw OpError(std::string("attribute ") + name + " has " + std::to_string(v.size()) +
                  " values; the input has spatial rank " + std::to_string(rank) + " and needs " +
                  std::to_string(want));
  }
}

}  // namespace

ConvReluKernel::ConvReluKernel(const OrtKernelInfo* info, std::string label)
    : label_(std::move(label)), attrs_(ReadPruneAttrs(info)) {
  ReadAttr(info, "auto_pad", &auto_pad_);
  if (auto_pad_ != "NOTSET" && auto_pad_ != "SAME_UPPER" && auto_pad_ != "SAME_LOWER" && auto_pad_ != "VALID") {
    throw OpError("attribute auto_pad = '" + auto_pad_ +
                  "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
  }
  // group and kernel_shape are accepted so that a Conv's attributes can be copied
  // over unchanged; they only have to agree with what the op does.
  int64_t group = 1;
  if (ReadAttr(info, "group", &group) && group != 1) {
    throw OpError("attribute group = " + std::to_string(group) + " is not supported (only 1)");
  }
  ReadAttr(info, "kernel_shape", &kernel_shape_);
  ReadAttr(info, "strides", &strides_);
  ReadAttr(info, "dilations", &dilations_);
  if (ReadAttr(info, "pads", &pads_) && auto_pad_ != "NOTSET") {
    throw OpError("attributes pads and auto_pad = " + auto_pad_ + " cannot be given together (as on ONNX Conv)");
  }
  for (int64_t s : strides_) {
    if (s < 1) throw OpError("attribute strides " + ShapeText(strides_) + " must be >= 1");
  }
  for (int64_t d : dilations_) {
    if (d < 1) throw OpError("attribute dilations " + ShapeText(dilations_) + " must be >= 1");
  }
  for (int64_t p : pads_) {
    if (p < 0) throw OpError("attribute pads " + ShapeText(pads_) + " must be >= 0");
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
    throw OpError("x must have shape [N, C, W] or [N, C, H, W] (spatial rank 1 or 2), got " +
                  ShapeText(x.shape));
  }
  const size_t sr = rank - 2;
  const int64_t batch = x.shape[0], channels = x.shape[1], k = attrs_.k;
  if (partial.shape.size() != rank || partial.shape[0] != batch) {
    throw OpError("partial must have shape [N, O, *OS] with the rank and batch of x " + ShapeText(x.shape) +
                  ", got " + ShapeText(partial.shape));
  }
  if (k >= channels) {
    throw OpError("attribute k = " + std::to_string(k) + " must be < n = " + std::to_string(channels) +
                  " (the channels of x)");
  }
  const int64_t outs = partial.shape[1], tail = channels - k;
  if (w.shape.size() != rank || w.shape[0] != outs || w.shape[1] != tail ||
      std::any_of(w.shape.begin() + 2, w.shape.end(), [](int64_t d) { return d < 1; })) {
    throw OpError("w_tail must have shape [O, C-k, *K] with O = " + std::to_string(outs) + ", C-k = " +
                  std::to_string(tail) + " and " + std::to_string(sr) + " kernel dims >= 1, got " +
                  ShapeText(w.shape));
  }
  if (bias.shape != std::vector<int64_t>{outs}) {
    throw OpError("bias must have shape [O] = " + ShapeText({outs}) + ", got " + ShapeText(bias.shape));
  }
  if (res.present && res.shape != partial.shape) {
    throw OpError("residual must have the shape of partial " + ShapeText(partial.shape) + ", got " +
                  ShapeText(res.shape));
  }
  if (!kernel_shape_.empty() && kernel_shape_ != std::vector<int64_t>(w.shape.begin() + 2, w.shape.end())) {
    throw OpError("attribute kernel_shape " + ShapeText(kernel_shape_) + " does not match w_tail " +
                  ShapeText(w.shape));
  }
  CheckCount("strides", strides_, sr, sr);
  CheckCount("dilations", dilations_, sr, sr);
  CheckCount("pads", pads_, 2 * sr, sr);

  std::vector<Axis> axes;
  std::vector<int64_t> implied{batch, outs};
  for (size_t d = 0; d < sr; ++d) {
    const bool explicit_pads = !pads_.empty();
    axes.push_back(ResolveAxis(d, x.shape[2 + d], w.shape[2 + d], strides_.empty() ? 1 : strides_[d],
                               dilations_.empty() ? 1 : dilations_[d], explicit_pads ? pads_[d] : 0,
                               explicit_pads ? pads_[sr + d] : 0, auto_pad_));
    implied.push_back(axes.back().out);
  }
  if (implied != partial.shape) {
    throw OpError("x " + ShapeText(x.shape) + ", w_tail " + ShapeText(w.shape) +
                  " and the strides/pads/dilations/auto_pad attributes give output shape " + ShapeText(implied) +
                  ", but partial has shape " + ShapeText(partial.shape));
  }

  const Outputs out = GetOutputs(ctx, partial.shape);

  const Axis ah = sr == 2 ? axes[0] : Axis{};
  const Axis aw = axes[sr - 1];
  const Taps th = TapRanges(ah), tw = TapRanges(aw);
  const int64_t in_plane = ah.in * aw.in, out_plane = ah.out * aw.out;
  const int64_t taps = ah.kernel * aw.kernel, w_per_out = tail * taps;

  // A task is a band of output rows of one (sample, output channel) plane, so the
  // plane's weights stay in cache and a single sample still spreads over threads.
  const int64_t row_work = std::max<int64_t>(1, aw.out * w_per_out);
  const int64_t band = std::clamp<int64_t>(CeilDiv(kTaskWork, row_work), 1, std::max<int64_t>(1, ah.out));
  const int64_t bands = CeilDiv(ah.out, band);
  const size_t tasks = static_cast<size_t>(batch * outs * bands);
  std::vector<int64_t> pruned(tasks, 0);

  const double ratio = static_cast<double>(channels) / static_cast<double>(k);
  const double threshold = attrs_.threshold;
  const float clip_max = attrs_.clip_max;
  auto body = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task);
    const int64_t plane = t / bands;  // = sample * outs + o
    const int64_t o = plane % outs, sample = plane / outs;
    const int64_t oy0 = (t % bands) * band, oy1 = std::min(ah.out, oy0 + band);
    const float* w_o = w.data + o * w_per_out;
    const float* x_n = x.data + (sample * channels + k) * in_plane;  // first tail channel
    const float b = bias.data[o];
    int64_t count = 0;
    for (int64_t oy = oy0; oy < oy1; ++oy) {
      const int64_t ky0 = th.lo[oy], ky1 = th.hi[oy], iy = th.start[oy];
      for (int64_t ox = 0; ox < aw.out; ++ox) {
        const int64_t i = plane * out_plane + oy * aw.out + ox;
        const float base = res.present ? b + res.data[i] : b;
        const float p = partial.data[i];
        if (Pruned(base, ratio, p, threshold)) {
          out.y[i] = 0.0f;
          ++count;
          continue;
        }
        const int64_t kx0 = tw.lo[ox], kx1 = tw.hi[ox], ix = tw.start[ox];
        float acc = 0.0f;
        for (int64_t c = 0; c < tail; ++c) {
          const float* x_c = x_n + c * in_plane;
          const float* w_c = w_o + c * taps;
          for (int64_t ky = ky0; ky < ky1; ++ky) {
            const float* x_row = x_c + (iy + ky * ah.dilation) * aw.in;
            const float* w_row = w_c + ky * aw.kernel;
            for (int64_t kx = kx0; kx < kx1; ++kx) acc += x_row[ix + kx * aw.dilation] * w_row[kx];
          }
        }
        out.y[i] = Activate(p + acc + base, clip_max);
      }
    }
    pruned[task] = count;
  };
  ParallelTasks(ctx, tasks, body);

  if (out.stats != nullptr) {
    out.stats[0] = std::accumulate(pruned.begin(), pruned.end(), int64_t{0});
    out.stats[1] = partial.size;
  }
}

}  // namespace exprune
