#include "sparse_conv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "sparse_conv_tile.h"

namespace exprune {

namespace {

using sparse_conv::Entry;
using sparse_conv::Row;

// Bytes of per-image scratch (the non-zero lists) held at once; larger batches are
// processed in groups of images.
constexpr int64_t kGroupBytes = int64_t{64} << 20;
// Multiply-adds per compute task if nothing were skipped: large enough that
// scheduling it is small next to the arithmetic.
constexpr int64_t kTaskWork = int64_t{1} << 19;
constexpr int64_t kMaxTasks = 1024;
// Input elements per task of the pass that lists the non-zero inputs.
constexpr int64_t kListWork = int64_t{1} << 15;
constexpr int64_t kMaxFloats = 512;  // the largest tile: nv * lanes * t of every kernel set

// Everything the two passes need about the layer.
struct Layer {
  int64_t batch, channels, groups, cg, mg, outs;  // cg, mg: input and output channels per group
  Axis h, w;
  const float *x, *wt, *bias, *res;  // bias and res may be null
  float* y;
  bool relu;
  float clip_max;
};

// Where a group of images' non-zero lists live: per (image, input row, group) a block
// of entries (capacity cg * in_w) and of pixel starts (cols + 1, padded columns).
struct Lists {
  Entry* entries;
  int32_t* start;
  int64_t cols;  // padded columns: left pad + enough for every tile's reads
  int64_t block(int64_t nl, int64_t iy, int64_t g, const Layer& l) const {
    return (nl * l.h.in + iy) * l.groups + g;
  }
};

// The lists of image n (its slot nl in the group), input row iy, group g: each pixel's
// non-zero channels in channel order, branch-free (every value is written, the count
// advances on non-zeros; NaN and Inf are not zero). Returns how many were listed.
int64_t ListRow(const Layer& l, const Lists& s, int64_t n, int64_t nl, int64_t iy, int64_t g) {
  const int64_t b = s.block(nl, iy, g, l), in_w = l.w.in, plane = l.h.in * in_w;
  Entry* e = s.entries + b * l.cg * in_w;
  int32_t* start = s.start + b * (s.cols + 1);
  const float* src = l.x + ((n * l.channels + g * l.cg) * l.h.in + iy) * in_w;
  const int64_t pad = l.w.pad;
  const int32_t w_step = static_cast<int32_t>(l.h.kernel * l.w.kernel * l.mg);
  std::fill(start, start + pad + 1, 0);
  int32_t count = 0;
  for (int64_t ix = 0; ix < in_w; ++ix) {
    int32_t off = static_cast<int32_t>(g * l.cg) * w_step;
    for (int64_t c = 0; c < l.cg; ++c, off += w_step) {
      const float v = src[c * plane + ix];
      e[count] = Entry{v, off};
      count += v != 0.0f ? 1 : 0;
    }
    start[pad + ix + 1] = count;
  }
  std::fill(start + pad + in_w + 1, start + s.cols + 1, count);
  return count;
}

// dst = act(sum + bias + residual) for the tile's valid positions and channels,
// written back to NCHW: the tile holds position j's channels contiguously.
void Finish(const Layer& l, const float* tile, int64_t stride_j, int64_t n, int64_t m0, int lanes, int64_t oy,
            int64_t ox0, int64_t count) {
  const int64_t plane = l.h.out * l.w.out;
  for (int m = 0; m < lanes; ++m) {
    const int64_t at = (n * l.outs + m0 + m) * plane + oy * l.w.out + ox0;
    const float b = l.bias != nullptr ? l.bias[m0 + m] : 0.0f;
    float* y = l.y + at;
    for (int64_t j = 0; j < count; ++j) {
      float v = tile[j * stride_j + m] + b;
      if (l.res != nullptr) v += l.res[at + j];
      y[j] = l.relu ? Activate(v, l.clip_max) : v;
    }
  }
}

// The register-tile shape for this layer: the fewest vectors that hold a group's
// output channels, at most four.
const sparse_conv::Shape& PickShape(const sparse_conv::Kernels& k, int64_t mg) {
  const int64_t vectors = CeilDiv(mg, k.lanes);
  return k.shapes[vectors <= 1 ? 0 : (vectors <= 2 ? 1 : 2)];
}

// Grow-only, uninitialised storage kept per calling thread across runs, so that the
// lists (twice the input's size) are not mapped, zeroed and faulted in on every call.
template <typename T>
T* Scratch(std::unique_ptr<T[]>& buf, size_t& capacity, size_t n) {
  if (capacity < n) {
    buf.reset();
    buf.reset(new T[n]);
    capacity = n;
  }
  return buf.get();
}

// Runs the layer over images [n0, n0 + count), whose lists are built first. Returns the
// number of non-zero inputs listed.
int64_t RunImages(const Ort::KernelContext& ctx, const Layer& l, const Lists& s, const sparse_conv::Shape& shape,
                  int64_t n0, int64_t count) {
  // ---- list the non-zero inputs: tasks of (image, band of input rows)
  const int64_t rows = count * l.h.in * l.groups;
  const int64_t row_work = std::max<int64_t>(l.cg * l.w.in, 1);
  const int64_t list_tasks = std::max<int64_t>(1, std::min({rows * row_work / kListWork, rows, kMaxTasks}));
  std::vector<int64_t> listed(static_cast<size_t>(list_tasks), 0);
  auto list = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task);
    int64_t sum = 0;
    for (int64_t r = t * rows / list_tasks; r < (t + 1) * rows / list_tasks; ++r) {
      const int64_t g = r % l.groups, iy = (r / l.groups) % l.h.in, nl = r / (l.groups * l.h.in);
      sum += ListRow(l, s, n0 + nl, nl, iy, g);
    }
    listed[static_cast<size_t>(task)] = sum;
  };
  ParallelTasks(ctx, static_cast<size_t>(list_tasks), list);

  // ---- the tiles: tasks of (image, group, block of output channels, band of output rows)
  const int64_t lanes_per_block = int64_t{shape.nv} * sparse_conv::Select().lanes;
  const int64_t blocks = CeilDiv(l.mg, lanes_per_block);
  const int64_t units = count * l.groups * blocks;
  const int64_t row_macs = l.w.out * lanes_per_block * l.cg * l.h.kernel * l.w.kernel;
  const int64_t want = std::clamp<int64_t>(units * l.h.out * row_macs / kTaskWork, 1, kMaxTasks);
  const int64_t bands = std::clamp<int64_t>(CeilDiv(want, units), 1, l.h.out);
  std::vector<Row> row_refs(static_cast<size_t>(units * bands * l.h.kernel));
  auto compute = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task);
    const int64_t band = t % bands, unit = t / bands;
    const int64_t blk = unit % blocks, g = (unit / blocks) % l.groups, nl = unit / (blocks * l.groups);
    const int64_t j0 = blk * lanes_per_block;
    const int lanes = static_cast<int>(std::min(lanes_per_block, l.mg - j0));
    const bool full = lanes == lanes_per_block;
    alignas(64) float tile[kMaxFloats];
    Row* kr = row_refs.data() + t * l.h.kernel;
    sparse_conv::Tile a{kr, l.h.kernel, l.w.kernel, l.wt + j0, l.mg, 0, l.w.stride, l.w.dilation, lanes, tile};
    const bool sweep = l.w.kernel == 3 && l.w.stride == 1 && l.w.dilation == 1;
    const sparse_conv::TileFn fn = sweep ? shape.sweep3[full] : shape.taps[full];
    for (int64_t oy = band * l.h.out / bands; oy < (band + 1) * l.h.out / bands; ++oy) {
      for (int64_t ky = 0; ky < l.h.kernel; ++ky) {
        const int64_t iy = oy * l.h.stride - l.h.pad + ky * l.h.dilation;
        if (iy < 0 || iy >= l.h.in) {
          kr[ky] = Row{nullptr, nullptr};
          continue;
        }
        const int64_t b = s.block(nl, iy, g, l);
        kr[ky] = Row{s.entries + b * l.cg * l.w.in, s.start + b * (s.cols + 1)};
      }
      for (int64_t ox0 = 0; ox0 < l.w.out; ox0 += shape.t) {
        a.col0 = ox0 * l.w.stride;  // padded column = input column + left pad
        fn(a);
        Finish(l, tile, lanes_per_block, n0 + nl, g * l.mg + j0, lanes, oy, ox0,
               std::min<int64_t>(shape.t, l.w.out - ox0));
      }
    }
  };
  ParallelTasks(ctx, static_cast<size_t>(units * bands), compute);
  int64_t total = 0;
  for (int64_t v : listed) total += v;
  return total;
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
}

void SparseConvKernel::Compute(OrtKernelContext* context) const {
  Ort::KernelContext ctx(context);
  const Input x = GetInput(ctx, 0, "x", false);
  const Input w = GetInput(ctx, 1, "w", false);
  const Input bias = GetInput(ctx, 2, "bias", true);
  const Input res = GetInput(ctx, 3, "residual", true);

  if (x.shape.size() != 4) throw OpError("x must have shape [N, C, H, W] (a 2-D conv), got " + ShapeText(x.shape));
  const int64_t channels = x.shape[1], groups = conv_.group;
  if (w.shape.size() != 4 || w.shape[0] != channels || w.shape[1] < 1 || w.shape[2] < 1) {
    throw OpError("w must have shape [C, KH, KW, M/group] with C = " + std::to_string(channels) +
                  " (the channels of x) and KH, KW >= 1, got " + ShapeText(w.shape));
  }
  if (channels % groups != 0) {
    throw OpError("attribute group = " + std::to_string(groups) + " does not divide the " +
                  std::to_string(channels) + " channels of x");
  }
  const std::vector<Axis> axes = ResolveAxes(conv_, {x.shape[2], x.shape[3]}, {w.shape[1], w.shape[2]}, "w",
                                             w.shape);
  Layer l{x.shape[0], channels, groups, channels / groups, w.shape[3], w.shape[3] * groups, axes[0], axes[1],
          x.data, w.data, bias.present ? bias.data : nullptr, res.present ? res.data : nullptr, nullptr, relu_,
          clip_max_};
  const std::vector<int64_t> y_shape{l.batch, l.outs, l.h.out, l.w.out};
  if (bias.present && bias.shape != std::vector<int64_t>{l.outs}) {
    throw OpError("bias must have shape [M] = " + ShapeText({l.outs}) + ", got " + ShapeText(bias.shape));
  }
  if (res.present && res.shape != y_shape) {
    throw OpError("residual must have the output's shape " + ShapeText(y_shape) + ", got " + ShapeText(res.shape));
  }
  if (w.size > std::numeric_limits<int32_t>::max() || l.cg * l.w.in > std::numeric_limits<int32_t>::max()) {
    throw OpError("w " + ShapeText(w.shape) + " or a row of x " + ShapeText(x.shape) +
                  " has more elements than this op indexes (2^31 - 1)");
  }
  const Outputs out = GetOutputs(ctx, y_shape);
  l.y = out.y;
  int64_t nonzero = 0;
  if (ElementCount(y_shape) > 0) {
    const sparse_conv::Shape& shape = PickShape(sparse_conv::Select(), l.mg);
    // Every padded column a tile reads (its last input's end included) has a start.
    const int64_t reach = (CeilDiv(l.w.out, shape.t) * shape.t - 1) * l.w.stride + (l.w.kernel - 1) * l.w.dilation;
    const int64_t cols = std::max(l.w.pad + l.w.in, reach + 2);
    const int64_t per_image = l.h.in * l.groups * (l.cg * l.w.in * int64_t{sizeof(Entry)} + (cols + 1) * 4);
    const int64_t group = std::clamp<int64_t>(kGroupBytes / std::max<int64_t>(per_image, 1), 1, l.batch);
    thread_local std::unique_ptr<Entry[]> entries;
    thread_local std::unique_ptr<int32_t[]> start;
    thread_local size_t entries_size = 0, start_size = 0;
    const Lists lists{
        Scratch(entries, entries_size, static_cast<size_t>(group * l.h.in * l.groups * l.cg * l.w.in)),
        Scratch(start, start_size, static_cast<size_t>(group * l.h.in * l.groups * (cols + 1))), cols};
    for (int64_t n0 = 0; n0 < l.batch; n0 += group) {
      nonzero += RunImages(ctx, l, lists, shape, n0, std::min(group, l.batch - n0));
    }
  }
  if (out.stats != nullptr) {
    out.stats[0] = nonzero;
    out.stats[1] = x.size;
  }
}

}  // namespace exprune
