// The stages of ExPruneSparseConv below its Compute (sparse_conv.cc, which checks the
// inputs and allocates y): per image, the share of non-zero inputs is sampled to pick the
// chunking and pairing; the non-zero inputs are listed a row at a time (sparse_conv_lists.h);
// the register tiles of sparse_conv_tile.h run over the lists and the write-back stores y.
// Both passes run as tasks on onnxruntime's thread pool, once over the image, or (layers
// of few weights) once per wave of output rows.
#pragma once

#include <atomic>
#include <cstdint>

#include "conv_attrs.h"
#include "kernel_util.h"
#include "sparse_conv_tile.h"

namespace exprune {
namespace sparse_conv_amx {
struct Weights;
}  // namespace sparse_conv_amx
namespace sparse_conv {

// Everything the two passes need about the layer.
struct Layer {
  int64_t batch, channels, groups, cg, mg, outs;  // cg, mg: input and output channels per group
  int64_t chunk, chunks;                          // input channels per list block, blocks per group
  bool pair;                                      // list channels shared by paired columns first
  bool few;                                       // few inputs are non-zero: list them by bits
  Axis h, w;
  const float *x, *wt, *bias, *res;  // bias and res may be null
  // Where the block of output channels [j0, j0 + lanes) of group g finds its weights:
  // w[g*cg + c, ky, kx, j0 + m] is at base + c * chan_step + (ky * kw + kx) * tap + m,
  // with base = wt + g * cg * chan_step + j0 and tap = mg for w as given, or, for the
  // kernel's blocked copy, base = wt + (g * blocks + j0 / lanes) * cg * chan_step and
  // tap = lanes (the block's, zero-padded).
  int64_t tap, chan_step;
  bool blocked;
  float* y;
  bool relu;
  float clip_max;
  // The tile path's weights (sparse_conv_amx.h), or null where it does not run.
  const sparse_conv_amx::Weights* amx;
  // Set once tasks are seen on more than one thread (null: never set).
  std::atomic<bool>* pooled;
};

// The register-tile shape for this layer: one vector of output channels when it holds
// a group's outputs, else two (more positions per tile: on the bench layers this beat
// four vectors of fewer positions, at every zero fraction measured), of the two tile
// widths the one that covers an output row in fewer positions (the longer on a tie):
// the wasted positions of a row's last tile cost loop work (3x3 256 -> 256 @60 ran 6%
// faster in tiles of 12 than of 14). The weight blocking depends on the vectors only.
const Shape& PickShape(const Kernels& k, int64_t mg, int64_t out_w);

// Runs every image of the layer into l.y. Returns the number of inputs read: the non-zero
// ones listed, and every input of an image the tile path ran.
int64_t RunBatch(const Ort::KernelContext& ctx, Layer l, const Shape& shape);

}  // namespace sparse_conv
}  // namespace exprune
