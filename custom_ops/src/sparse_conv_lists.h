// Where ExPruneSparseConv keeps its lists of non-zero inputs, and how one input row of
// them is built (sparse_conv_tile.h gives the entries' order within a row).
#pragma once

#include <cstdint>

#include "scratch.h"
#include "sparse_conv_run.h"
#include "sparse_conv_tile.h"

namespace exprune {
namespace sparse_conv {

// Where a group of images' non-zero lists live: per (image, input row, group, chunk of
// channels) a block of entries (room for chunk * in_w + cols) and the starts of its
// cols + 1 padded columns followed by the counts of its cols / 2 + 1 column pairs.
struct Lists {
  Entry* entries;
  int32_t* start;
  int64_t cols;                       // padded columns: left pad + enough for every tile's reads
  scratch::Grown<float>* transposed;  // the listers' per-task rows (ListIn::scratch)
  int64_t block(int64_t nl, int64_t iy, int64_t g, int64_t k, const Layer& l) const {
    return ((nl * l.h.in + iy) * l.groups + g) * l.chunks + k;
  }
  int64_t room(const Layer& l) const { return l.chunk * l.w.in + cols + kListSlack; }
  static int64_t Starts(int64_t cols) { return cols + 1 + cols / 2 + 1; }
  // The padded columns of an input row the tiles of `shape` read: the row, and the reach
  // of a row's last tile, whose positions past the output are computed and dropped.
  static int64_t Columns(const Layer& l, const Shape& shape);
  Entry* entries_of(int64_t b, const Layer& l) const { return entries + b * room(l); }
  int32_t* starts_of(int64_t b) const { return start + b * Starts(cols); }
  int32_t* both_of(int64_t b) const { return starts_of(b) + cols + 1; }
  Row row(int64_t b, const Layer& l) const { return Row{entries_of(b, l), starts_of(b), both_of(b)}; }
};

// The lists of image n (its slot nl in the group), input row iy, group g, chunk k: each
// pixel's non-zero channels, first those also non-zero in the paired pixel, then the
// others. Returns how many were listed. `next` has room for 2 * in_w counters, `scratch`
// for the instruction set's lister (sparse_conv_tile.h, ListIn::scratch).
int64_t ListRow(const Layer& l, const Lists& s, int64_t n, int64_t nl, int64_t iy, int64_t g, int64_t k, int32_t* next,
                float* scratch);

}  // namespace sparse_conv
}  // namespace exprune
