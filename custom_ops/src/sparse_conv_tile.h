// The inner loop of ExPruneSparseConv (sparse_conv_run.cc), built once per instruction
// set and picked when first used, the same set as conv_tail.h picks (AVX-512,
// AVX2+FMA or portable C++; $EXPRUNE_CONV_KERNELS forces one).
//
// One call computes an output tile: t consecutive output positions of one output row
// times nv vectors of output channels, all held in registers across the whole
// reduction. The reduction visits only non-zero inputs: each input row comes as, per
// input column, the list of its non-zero channels (value and weight offset), so a zero
// input costs nothing but its absence from a list. For each listed input and each
// kernel tap that reaches the tile, a broadcast of the input is multiplied into the
// tap's weights, which are contiguous over output channels (w is [C, KH, KW, M/group]).
//
// The instruction-set files include this header: keep it free of inline code (see
// sparse_conv_tile_impl.h).
#pragma once

#include <cstdint>

namespace exprune {
namespace sparse_conv {

// A non-zero input value and the offset in w of its channel's weights w[c, 0, 0, 0].
struct Entry {
  float v;
  int32_t w_off;
};

// The non-zero inputs of one input row of one group (and chunk of channels): those of
// padded column q (input column q - left pad) are entries[start[q]] ..
// entries[start[q + 1] - 2] (each column is followed by one spare slot). Columns are
// paired, 2p with 2p + 1: each list starts with the both[p] channels that are non-zero
// in both columns, in the same order, then holds the rest. A 3x3 tile loads the weights
// of a channel of the first part once for both inputs: with a weight load per
// multiply-add the loads, not the multiply-adds, set the pace (bench/fma_load_probe.cc).
// A row in the vertical padding has entries == nullptr.
struct Row {
  const Entry* entries;
  const int32_t* start;
  const int32_t* both;
};

struct Tile {
  const Row* rows;  // kh rows, one per kernel row (entries == nullptr: skipped)
  int64_t kh, kw;
  const float* w;            // w at the block's first output channel: tap (ky, kx) of entry e is
                             // w + e.w_off + (ky * kw + kx) * tap
  int64_t tap;               // floats per tap: M / group
  int64_t col0;              // padded column read by output 0 of the tile at kx = 0 (even for sweep3)
  int64_t stride, dilation;  // along the row
  int lanes;                 // output channels of the block in w (the rest of the vectors are not read)
  float* out;                // out[j * nv * kLanes + m]: the sum of position j, output channel m
  bool accumulate;           // add to the sums in out (those of other input channels), or start at 0
  // Weights needed later, fetched towards level 2 while the tile runs, `fetch_step` bytes
  // (whole lines) at each step of its column loop, until `fetch_end`; none when equal.
  const char* fetch = nullptr;
  const char* fetch_end = nullptr;
  int64_t fetch_step = 0;
};

using TileFn = void (*)(const Tile&);

// The write-back of a row segment: y[m * plane + j] = act(sums[j * stride + m] + bias[m]
// + res[m * plane + j]) for positions j < count and channels m < lanes, the sums
// transposed in registers (the tiles hold a position's channels in a vector; y is NCHW).
struct Out {
  const float* sums;
  int64_t stride;     // floats between positions in sums
  int64_t count;      // positions
  int lanes;          // output channels
  const float* bias;  // at the first channel; null: none
  const float* res;   // at the first channel and position, laid out as y; null: none
  float* y;
  int64_t plane;  // floats between channels of y and res
  bool relu;
  float clip_max;
};

using FinishFn = void (*)(const Out&);

// Lists one input row of `channels` channels as a Row (its entries, cols + 1 column
// starts and cols / 2 + 1 pair counts), the same lists as sparse_conv_lists.cc's portable
// ListRow. May write up to kListSlack entries past the last one it lists. Returns the
// number of non-zeros.
struct ListIn {
  const float* src;   // the first channel's row
  const float* next;  // the row listed next at src's place (the next input row), or null:
                      // prefetched while this one is listed, as 16+ channel planes read a
                      // row at a time are too many streams for the hardware prefetcher
  int64_t plane;      // floats between channels in src
  int64_t channels, in_w, pad, cols;
  int32_t off0, off_step;  // Entry::w_off of the first channel, and between channels
  bool pair;               // false: no column is paired (every both[p] is 0)
  bool few;                // few of the inputs are non-zero (a hint: the lists are the same)
  Entry* entries;
  int32_t* start;
  int32_t* both;
  float* scratch;  // in_w and channels, each rounded up to a multiple of kListBlock, multiplied
};

using ListFn = int64_t (*)(const ListIn&);
constexpr int64_t kListSlack = 32;
constexpr int64_t kListBlock = 16;

// One register tile: nv vectors of output channels times t positions. [0] handles a
// block whose last vector is partial (lanes < nv * kLanes), [1] a full block.
struct Shape {
  int nv, t;
  TileFn sweep3[2];  // kw = 3, stride 1, dilation 1: each input read once for its three taps
  TileFn taps[2];    // anything else: one pass per kernel column
};

struct Kernels {
  const char* name;
  int lanes;        // floats per vector
  Shape shapes[3];  // nv = 1; nv = 2; nv = 2 in fewer positions
  FinishFn finish;
  ListFn list;  // null: the portable ListRow (sparse_conv_lists.cc)
};

// The set of conv_tail::Select()'s instruction set.
const Kernels& Select();

const Kernels& Generic();
const Kernels* Avx2Table();    // null when the build left the instruction set out
const Kernels* Avx512Table();  // likewise

}  // namespace sparse_conv
}  // namespace exprune
