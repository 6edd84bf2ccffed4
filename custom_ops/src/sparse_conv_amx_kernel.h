// The raw-pointer stages of ExPruneSparseConv's tile path (sparse_conv_amx.h), built
// alone with the AMX flags in sparse_conv_amx_kernel.cc. Nothing with inline functions
// is included here: no inline function may be shared between files built with
// different -m flags.
#pragma once

#include <cstdint>

namespace exprune {
namespace sparse_conv_amx {

constexpr int64_t kChannels = 32;    // input channels in a tile row (16 bfloat16 pairs)
constexpr int64_t kOutputs = 32;     // output channels of a block: two tiles of 16
constexpr int64_t kPositions = 16;   // output positions in a tile (its rows)
constexpr int64_t kTileElems = 512;  // bfloat16 values in one 1 KB tile
// The tile unit reads subnormal bfloat16 as 0 and flushes subnormal products to 0. With
// every non-zero input and weight at least 2^-40 in magnitude, every part product kept
// is above 2^-110, far from that.
constexpr float kSmallest = 0x1p-40f;

// Palette 1, all eight tiles 16 rows of 64 bytes (also bench/amx_tile_probe.cc's).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// One image's input as three planes of bfloat16 parts, each [nkc][hp][wp][kChannels]:
// channel block, padded row, padded column, channel. Padding and the channels past C
// hold zeros.
struct Planes {
  uint16_t* data;
  int64_t nkc, hp, wp;
  int64_t part() const { return nkc * hp * wp * kChannels; }
};

// Writes padded row py of channel block kc of every part from image x ([C, h, w]).
struct PackIn {
  const float* x;
  int64_t channels, h, w, pad_t, pad_l;
  Planes planes;
  int64_t kc, py;
};

// One block of kOutputs output channels at two tiles of positions. at[i]: the element
// offset in a part of tile i's first position at tap (0, 0) of channel block 0.
struct BlockIn {
  Planes planes;
  const uint16_t* w;  // the block's weights: [ky][kx][kc][half][part][kTileElems]
  int64_t kh, kw, stride_w, dil_h, dil_w;
  int64_t at[2];
  float* sums;  // [2][kPositions][kOutputs]: tile i's position j, output m
};

struct Kernels {
  bool (*pack_row)(const PackIn&);  // false: the row holds Inf, NaN or a non-zero under kSmallest
  void (*begin)();                  // loads the tile configuration on this thread
  void (*end)();                    // releases the tiles
  void (*block)(const BlockIn&);
};

// The stages, or null when the build lacks the AMX flags (sparse_conv_amx_kernel.cc).
const Kernels* KernelTable();

}  // namespace sparse_conv_amx
}  // namespace exprune
