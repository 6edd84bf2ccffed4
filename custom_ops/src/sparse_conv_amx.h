// The dense path of ExPruneSparseConv on CPUs with AMX-BF16 tiles (docs/sparse_conv.md,
// "The tile path"). Where most inputs are non-zero, listing them costs more than it
// skips; this path computes the whole convolution on the tile unit instead. Every
// float is split exactly into three bfloat16 parts (hi + mid + lo, each the top 16 bits
// of what the earlier parts leave), and the six part products down to 2^-16 of the
// product are summed in float32: the parts left out are at most 2^-23 of each product,
// about float32's own rounding of the sum. Inf and NaN have no such split, and the tile
// unit flushes subnormal values to 0: an image holding Inf, NaN or a non-zero under
// kSmallest (2^-40) runs the list path, and weights holding one never run on the tiles.
//
// sparse_conv_amx.cc (plain flags) holds the set-up, the weights and the tasks; the
// stages they run are in sparse_conv_amx_kernel.h.
#pragma once

#include <cstdint>
#include <vector>

#include "kernel_util.h"
#include "sparse_conv_amx_kernel.h"
#include "sparse_conv_run.h"

namespace exprune {
namespace sparse_conv_amx {

// The weights as the tiles read them, for one group of C inputs and M outputs:
// [M / kOutputs blocks][ky][kx][kc][half][part][16 channel pairs][16 outputs][2].
struct Weights {
  AlignedVector<uint16_t> data;
  bool ready() const { return !data.empty(); }
};

// The stages when this CPU and OS run them and $EXPRUNE_CONV_KERNELS allows, else null.
const Kernels* Usable();
// Whether the tiles are forced for every image ($EXPRUNE_CONV_KERNELS=amx).
bool Forced();
// Whether an image of `channels` input channels whose sampled non-zero share is `share`
// runs on the tiles.
bool Wanted(double share, int64_t channels);

// Packs w[C, KH, KW, M] (the op's layout, one group). Leaves `out` empty when w holds
// Inf, NaN or a non-zero under kSmallest, or the CPU has no tiles.
void PackWeights(const float* w, int64_t channels, int64_t kh, int64_t kw, int64_t outputs, Weights* out);

// Runs image n of the layer on the tiles into l.y. Returns false, with y untouched, when
// the image holds Inf, NaN or, where the tiles read, a non-zero under kSmallest.
bool RunImage(const Ort::KernelContext& ctx, const sparse_conv::Layer& l, const Weights& w, int64_t n);

}  // namespace sparse_conv_amx
}  // namespace exprune
