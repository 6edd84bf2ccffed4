// The stages of ExPruneConvRelu's phase 2 (conv_relu.cc): ConvReluKernel::Compute
// checks the inputs and allocates the outputs, then FinishConv runs these stages over
// raw pointers and sizes. conv_relu_plan.cc lays out the blocks and prepares the
// inputs they need; conv_relu_finish.cc decides the outputs and finishes the survivors.
#pragma once

#include <cstdint>
#include <vector>

#include "conv_attrs.h"
#include "conv_tail.h"
#include "kernel_util.h"

namespace exprune {
namespace conv_relu {

// Everything phase 2 needs about the layer's shape.
struct Geometry {
  int64_t batch = 0, tail = 0, outs = 0;
  Axis h, w;  // h is the unit axis for 1-D convs
};

struct ConvArgs {
  const float* partial;
  const float* w_taps;  // w_tail repacked by RepackTaps, or null to repack here
  const float* x_tail;  // x[0, k]: the first tail channel of sample 0
  int64_t x_sample;     // floats per sample of x
  const float* w_tail;
  const float* bias;
  const float* res;  // null when absent
  float* y;
  double ratio, threshold;
  const float* thresholds;  // per output, or null: `threshold` for all
  float clip_max;
  Rule rule;
  double t_k, t_n, z_crit;  // statstest: terms of the partial and of the full sum; z_crit
  RuleInputs extra;         // the rule's inputs 5..7 (kernel_util.h)
};

// Floats per cache line: the sparse path pads channels to a multiple of it.
constexpr int64_t kLineFloats = 16;

enum Mode : uint8_t { kNone = 0, kSparse = 1, kDense = 2 };

// The layout of the blocks and of the input copies, fixed by the layer's shape and
// the selected kernels (see FinishConv in conv_relu_finish.cc).
struct Plan {
  int64_t positions, outs, tail, taps, length, in_plane;
  int64_t rows, cols;  // a block: output channels x consecutive slots
  // The region of the input all windows cover, zero-padded: [hp][wp] per channel.
  int64_t hp, wp;
  // Its stride phases, [C-k][sh][sw][hq][pitch] per sample (+ the last block's overrun).
  int64_t sh, sw, hq, pitch, phase_floats, pad_floats;
  std::vector<uint8_t> phase_used;
  int64_t slots, oblocks, sblocks, blocks;
  // The output positions of each slot block sb: ranges [first, last) of the plane
  // range_at[sb] .. range_at[sb + 1] in `ranges` (two entries each).
  std::vector<int64_t> range_at, ranges;
  // Where each tap (c, ky, kx) of a block's first slot is read, in w_tail's order.
  std::vector<int64_t> offsets;
  // The sparse path's channels-last copy, [hp][wp][cpad], and weights, [O][ky][kx][cpad]:
  // a patch is nseg segments of seglen floats starting at seg_off.
  int64_t cpad, length_last, image_floats, nseg, seglen;
  std::vector<int64_t> seg_off;
};

// Per-group scratch: pointers into a call's leased buffers (scratch.h) sized for `group` images.
struct GroupBuffers {
  uint8_t* keep;     // [group][outs][positions]
  uint8_t* mode;     // [group][blocks]
  int64_t* kept;     // [group][oblocks]
  int64_t* cost;     // [group][oblocks], in outputs of dense work
  float* pixel_max;  // certified only: [group][in_plane], else null
  double* pixel_sq;
  float* field_max;  // certified only: [group][positions], else null
  double* field_norm;
};

// The input copies a group's blocks read (null where no block needs them).
struct Prepared {
  const float* x_pad;   // [nb][pad_floats]: stride phases for the dense blocks
  const float* x_last;  // [nb][image_floats]: channels-last copy for the sparse blocks
};

// Grow-only scratch (scratch.h keeps it between calls, so that large buffers are not
// mapped and faulted in again on every call).
template <typename Vec>
typename Vec::value_type* Grow(Vec& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// w_tail [O][C-k][taps] repacked for the sparse path, outputs [o0, o1):
// dst[o][tap][c] = w[o][c][tap], with the channels padded with zeros to cpad.
void RepackTaps(const float* w, int64_t tail, int64_t taps, int64_t cpad, int64_t o0, int64_t o1, float* dst);

Plan MakePlan(const Geometry& g, const conv_tail::Kernels& kern);

// Certified: xmax and xnorm of every output position's receptive field, images
// n0 .. n0 + nb, into b.field_max and b.field_norm.
void FieldStats(const Ort::KernelContext& ctx, const Geometry& g, const Plan& p, const ConvArgs& a, int64_t n0,
                int64_t nb, const GroupBuffers& b);

// Decides every output of images n0 .. n0 + nb and classifies the blocks.
void DecideBlocks(const Ort::KernelContext& ctx, const conv_tail::Kernels& kern, const Plan& p, const ConvArgs& a,
                  int64_t n0, int64_t nb, const GroupBuffers& b);

// Where PrepareInputs makes its copies (and the repacked w_tail): part of a call's leased scratch.
struct PrepareScratch {
  AlignedFloats w_taps, x_pad, x_last;
};

// Makes the input copies the group's blocks need in `cs`; repacks w_tail into *w_taps on
// first need.
Prepared PrepareInputs(const Ort::KernelContext& ctx, const conv_tail::Kernels& kern, const Geometry& g, const Plan& p,
                       const ConvArgs& a, int64_t n0, int64_t nb, const uint8_t* mode, PrepareScratch& cs,
                       const float** w_taps);

// Finishes the survivors of images n0 .. n0 + nb; `work` is their multiply-adds.
void FinishBlocks(const Ort::KernelContext& ctx, const conv_tail::Kernels& kern, const Geometry& g, const Plan& p,
                  const ConvArgs& a, int64_t n0, int64_t nb, int64_t work, const GroupBuffers& b, const Prepared& in,
                  const float* w_taps);

// Phase 2 of the layer: decides every output, writes 0 where pruned and finishes the
// survivors. Returns the number of pruned outputs.
int64_t FinishConv(const Ort::KernelContext& ctx, const Geometry& g, const ConvArgs& a);

}  // namespace conv_relu
}  // namespace exprune
