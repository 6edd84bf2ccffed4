// ExPruneConvRelu's phase 2, last stages: deciding the outputs, classifying the blocks
// and finishing the survivors, and FinishConv, which runs all stages in order
// (conv_relu_impl.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "conv_relu_impl.h"
#include "scratch.h"

namespace exprune {
namespace conv_relu {

namespace {

// Multiply-adds per compute task if nothing were pruned: large enough that scheduling
// it is small next to the arithmetic.
constexpr int64_t kTaskWork = int64_t{1} << 20;
constexpr int64_t kMaxTasks = 256;
// A dense block is computed as a whole when at least this share of it survives;
// below it its survivors are finished one dot product at a time.
constexpr double kDenseShare = 0.3;
// Rough cost of one sparse survivor relative to one output of a dense block.
constexpr int64_t kSparseCost = 3;
// Bytes of per-image scratch (survivor masks, channels-last input copy) held at once;
// larger batches are processed in groups of images.
constexpr int64_t kGroupBytes = int64_t{32} << 20;

// The number of nonzero bytes among n, each 0 or 1: 8 at a time, summed per byte
// lane (at most 255 words before a lane could overflow), then across the lanes.
int64_t CountKept(const uint8_t* keep, int64_t n) {
  int64_t count = 0, i = 0;
  while (i + 8 <= n) {
    uint64_t lanes = 0;
    for (int64_t words = 0; words < 255 && i + 8 <= n; ++words, i += 8) {
      uint64_t w;
      std::memcpy(&w, keep + i, 8);
      lanes += w;
    }
    const uint64_t pairs = (lanes & 0x00FF00FF00FF00FFull) + ((lanes >> 8) & 0x00FF00FF00FF00FFull);
    count += static_cast<int64_t>((pairs * 0x0001000100010001ull) >> 48);
  }
  for (; i < n; ++i) count += keep[i];
  return count;
}

// A call's scratch (scratch.h), in blocks that are mapped when large (kernel_util.h).
struct CallScratch {
  AlignedVector<uint8_t> keep, mode;
  AlignedVector<int64_t> kept, cost;
  AlignedVector<float> pixel_max, field_max;  // certified: per input pixel, per output position
  AlignedVector<double> pixel_sq, field_norm;
  PrepareScratch prepare;  // the input copies
};
struct TaskScratch {
  std::vector<const float*> ptrs;
  std::vector<int64_t> ranges;
};
thread_local TaskScratch t_task;  // a task's few pointers: small, kept by each pool thread

// Image nl's dense blocks among output blocks ob0 .. ob1 and slot blocks sb0 .. sb1.
void DenseBlocks(const conv_tail::Kernels& kern, const Geometry& g, const Plan& p, const ConvArgs& a, int64_t n,
                 const uint8_t* m, const uint8_t* kb, const float* x_pad, int64_t ob0, int64_t ob1, int64_t sb0,
                 int64_t sb1, const float** ptrs) {
  const int64_t rows = p.rows, cols = p.cols, outs = p.outs, positions = p.positions;
  for (int64_t sb = sb0; sb < sb1; ++sb) {
    const float* src = x_pad + sb * cols;
    for (int64_t ob = ob0; ob < ob1; ++ob) {
      if (m[ob * p.sblocks + sb] != kDense) continue;
      const int64_t o0 = ob * rows, o1 = std::min(outs, o0 + rows);
      for (int64_t o = o0; o < o1; ++o) ptrs[o - o0] = a.w_tail + o * p.length;
      const int64_t i0 = (n * outs + o0) * positions;
      const conv_tail::DenseOut dst{a.partial + i0,
                                    a.res != nullptr ? a.res + i0 : nullptr,
                                    kb + o0 * positions,
                                    a.y + i0,
                                    a.bias + o0,
                                    positions,
                                    sb * cols,
                                    p.pitch,
                                    g.w.out,
                                    p.slots,
                                    a.clip_max};
      kern.dense(src, p.offsets.data(), p.length, ptrs, static_cast<int>(o1 - o0), dst);
    }
  }
}

// Image nl's sparse blocks among output blocks ob0 .. ob1 and slot blocks sb0 .. sb1.
void SparseBlocks(const conv_tail::Kernels& kern, const Geometry& g, const Plan& p, const ConvArgs& a, int64_t n,
                  const uint8_t* m, const uint8_t* kb, const float* x_last, const float* w_taps, int64_t ob0,
                  int64_t ob1, int64_t sb0, int64_t sb1, int64_t* task_ranges) {
  const int64_t rows = p.rows, outs = p.outs, positions = p.positions;
  conv_tail::SparseJob job{};
  job.x = x_last;
  job.out_w = g.w.out;
  job.row_step = g.h.stride * p.wp * p.cpad;
  job.col_step = g.w.stride * p.cpad;
  job.seg_off = p.seg_off.data();
  job.nseg = p.nseg;
  job.seglen = p.seglen;
  job.ranges = task_ranges;
  job.clip_max = a.clip_max;
  for (int64_t ob = ob0; ob < ob1; ++ob) {
    // The position ranges of this task's sparse blocks in this row of blocks.
    job.nranges = 0;
    for (int64_t sb = sb0; sb < sb1; ++sb) {
      if (m[ob * p.sblocks + sb] != kSparse) continue;
      for (int64_t r = p.range_at[sb]; r < p.range_at[sb + 1]; ++r, ++job.nranges) {
        task_ranges[2 * job.nranges] = p.ranges[2 * r];
        task_ranges[2 * job.nranges + 1] = p.ranges[2 * r + 1];
      }
    }
    if (job.nranges == 0) continue;
    for (int64_t o = ob * rows; o < std::min(outs, (ob + 1) * rows); ++o) {
      const int64_t i = (n * outs + o) * positions;
      job.w = w_taps + o * p.length_last;
      job.keep = kb + o * positions;
      job.partial = a.partial + i;
      job.res = a.res != nullptr ? a.res + i : nullptr;
      job.y = a.y + i;
      job.bias = a.bias[o];
      kern.sparse(job);
    }
  }
}

}  // namespace

void DecideBlocks(const Ort::KernelContext& ctx, const conv_tail::Kernels& kern, const Plan& p, const ConvArgs& a,
                  int64_t n0, int64_t nb, const GroupBuffers& b) {
  const int64_t rows = p.rows, cols = p.cols, outs = p.outs, positions = p.positions;
  const int64_t oblocks = p.oblocks, sblocks = p.sblocks;
  auto decide = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task), nl = t / oblocks, ob = t % oblocks;
    const int64_t o0 = ob * rows, o1 = std::min(outs, o0 + rows);
    uint8_t* kb = b.keep + nl * outs * positions;
    int64_t count = 0;
    for (int64_t o = o0; o < o1; ++o) {
      const int64_t i = ((n0 + nl) * outs + o) * positions;
      const float* res = a.res != nullptr ? a.res + i : nullptr;
      switch (a.rule) {
        case Rule::kThreshold: {
          const double threshold = a.thresholds != nullptr ? static_cast<double>(a.thresholds[o]) : a.threshold;
          count +=
              kern.decide(a.partial + i, res, a.bias[o], a.ratio, threshold, positions, a.y + i, kb + o * positions);
          break;
        }
        case Rule::kStatsTest:
          count += kern.decide_stats(a.partial + i, a.extra.partial_sq + i, res, a.bias[o], a.t_k, a.t_n, a.z_crit,
                                     positions, a.y + i, kb + o * positions);
          break;
        case Rule::kCertified:
          count += kern.decide_certified(a.partial + i, res, a.bias[o], a.extra.w_pos_sum[o], a.extra.w_pos_norm[o],
                                         b.field_max + nl * positions, b.field_norm + nl * positions, positions,
                                         a.y + i, kb + o * positions);
          break;
      }
    }
    b.kept[t] = count;
    int64_t work = 0;
    for (int64_t sb = 0; sb < sblocks; ++sb) {
      int64_t live = 0, size = 0;
      for (int64_t r = p.range_at[sb]; r < p.range_at[sb + 1]; ++r) {
        const int64_t p0 = p.ranges[2 * r], p1 = p.ranges[2 * r + 1];
        size += p1 - p0;
        for (int64_t o = o0; o < o1; ++o) live += CountKept(kb + o * positions + p0, p1 - p0);
      }
      const double share = static_cast<double>(live) / static_cast<double>(std::max<int64_t>(size * (o1 - o0), 1));
      const Mode mb = live == 0 ? kNone : share >= kDenseShare ? kDense : kSparse;
      b.mode[nl * p.blocks + ob * sblocks + sb] = mb;
      work += mb == kDense ? rows * cols : mb == kSparse ? kSparseCost * live : 0;
    }
    b.cost[t] = work;
  };
  ParallelTasks(ctx, static_cast<size_t>(nb * oblocks), decide);
}

// Tasks of (sample, run of slot blocks, run of output blocks).
void FinishBlocks(const Ort::KernelContext& ctx, const conv_tail::Kernels& kern, const Geometry& g, const Plan& p,
                  const ConvArgs& a, int64_t n0, int64_t nb, int64_t work, const GroupBuffers& b, const Prepared& in,
                  const float* w_taps) {
  const int64_t sblocks = p.sblocks, oblocks = p.oblocks;
  const int64_t want = std::clamp<int64_t>(work / kTaskWork, 1, kMaxTasks);
  const int64_t want_image = CeilDiv(want, nb);
  const int64_t tile = CeilDiv(sblocks, std::min(sblocks, want_image));  // slot blocks per task
  const int64_t tiles = CeilDiv(sblocks, tile);
  const int64_t ochunk = CeilDiv(oblocks, std::clamp<int64_t>(want_image / tiles, 1, oblocks));
  const int64_t ochunks = CeilDiv(oblocks, ochunk);

  auto compute = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task);
    const int64_t nl = t / (tiles * ochunks), tl = (t / ochunks) % tiles, oc = t % ochunks;
    const int64_t n = n0 + nl;
    const int64_t sb0 = tl * tile, sb1 = std::min(sblocks, sb0 + tile);
    const int64_t ob0 = oc * ochunk, ob1 = std::min(oblocks, ob0 + ochunk);
    const uint8_t* m = b.mode + nl * p.blocks;
    const uint8_t* kb = b.keep + nl * p.outs * p.positions;
    bool any_dense = false, any_sparse = false;
    for (int64_t ob = ob0; ob < ob1; ++ob) {
      for (int64_t sb = sb0; sb < sb1; ++sb) {
        any_dense |= m[ob * sblocks + sb] == kDense;
        any_sparse |= m[ob * sblocks + sb] == kSparse;
      }
    }
    if (!any_dense && !any_sparse) return;
    TaskScratch& ts = t_task;
    const float** ptrs = Grow(ts.ptrs, static_cast<size_t>(p.rows));
    if (any_dense) DenseBlocks(kern, g, p, a, n, m, kb, in.x_pad + nl * p.pad_floats, ob0, ob1, sb0, sb1, ptrs);
    if (any_sparse) {
      int64_t* task_ranges = Grow(ts.ranges, static_cast<size_t>(2 * (p.range_at[sb1] - p.range_at[sb0])));
      SparseBlocks(kern, g, p, a, n, m, kb, in.x_last + nl * p.image_floats, w_taps, ob0, ob1, sb0, sb1, task_ranges);
    }
  };
  ParallelTasks(ctx, static_cast<size_t>(nb * tiles * ochunks), compute);
}

// Outputs are split into blocks of `rows` channels x `cols` consecutive slots of the
// output plane. A block where most outputs survive is computed densely: `rows` weight
// rows times `cols` positions in registers, the inputs read as vectors straight from a
// zero-padded copy of the input tail split into stride phases: plane (c, py, px) holds
// the padded input rows py, py + sh, ... and columns px, px + sw, ..., each row
// `pitch` floats. Output (oy, ox) is slot q = oy * pitch + ox, and its tap (ky, kx) of
// channel c is element q + offsets[(c, ky, kx)] (the plane of phase (ky * dh % sh,
// kx * dw % sw), shifted by ky * dh / sh rows and kx * dw / sw columns), so a block is
// a plain offset into the copy; the pitch - OW slots past each row's end are computed
// and dropped. The survivors of the other blocks are finished by dot products of the
// tail weights, repacked channels-last ([O][ky][kx][C-k]), with the patches read in
// place from a zero-padded channels-last copy of the input tail. Blocks with no
// survivor cost nothing.
int64_t FinishConv(const Ort::KernelContext& ctx, const Geometry& g, const ConvArgs& a) {
  const conv_tail::Kernels& kern = conv_tail::Select();
  const int64_t positions = g.h.out * g.w.out, outs = g.outs;
  if (g.batch == 0 || outs == 0 || positions == 0) return 0;
  const Plan p = MakePlan(g, kern);

  constexpr int64_t kSlack = 64;  // keep bytes the dense kernels may read around a block
  const bool certified = a.rule == Rule::kCertified;
  const int64_t per_image = outs * positions + p.blocks + (p.image_floats + p.pad_floats) * 4 +
                            (certified ? (p.in_plane + positions) * 12 : 0);
  const int64_t group = std::clamp<int64_t>(kGroupBytes / std::max<int64_t>(per_image, 1), 1, g.batch);
  const scratch::Pool<CallScratch>::Lease call = scratch::Pool<CallScratch>::Take();
  CallScratch& cs = *call;
  GroupBuffers b;
  b.keep = Grow(cs.keep, static_cast<size_t>(group * outs * positions + 2 * kSlack)) + kSlack;
  b.mode = Grow(cs.mode, static_cast<size_t>(group * p.blocks));
  b.kept = Grow(cs.kept, static_cast<size_t>(group * p.oblocks));
  b.cost = Grow(cs.cost, static_cast<size_t>(group * p.oblocks));
  b.pixel_max = certified ? Grow(cs.pixel_max, static_cast<size_t>(group * p.in_plane)) : nullptr;
  b.pixel_sq = certified ? Grow(cs.pixel_sq, static_cast<size_t>(group * p.in_plane)) : nullptr;
  b.field_max = certified ? Grow(cs.field_max, static_cast<size_t>(group * positions)) : nullptr;
  b.field_norm = certified ? Grow(cs.field_norm, static_cast<size_t>(group * positions)) : nullptr;
  const float* w_taps = a.w_taps;  // repacked on first need when not given
  int64_t total_kept = 0;

  for (int64_t n0 = 0; n0 < g.batch; n0 += group) {
    const int64_t nb = std::min(group, g.batch - n0);
    if (certified) FieldStats(ctx, g, p, a, n0, nb, b);
    DecideBlocks(ctx, kern, p, a, n0, nb, b);
    int64_t work = 0;
    for (int64_t t = 0; t < nb * p.oblocks; ++t) {
      total_kept += b.kept[t];
      work += b.cost[t] * p.length;
    }
    const Prepared in = PrepareInputs(ctx, kern, g, p, a, n0, nb, b.mode, cs.prepare, &w_taps);
    FinishBlocks(ctx, kern, g, p, a, n0, nb, work, b, in, w_taps);
  }
  return g.batch * outs * positions - total_kept;
}

}  // namespace conv_relu
}  // namespace exprune
