#include "sparse_conv_lists.h"

#include <algorithm>

namespace exprune {
namespace sparse_conv {

int64_t Lists::Columns(const Layer& l, const Shape& shape) {
  const int64_t reach = (CeilDiv(l.w.out, shape.t) * shape.t - 1) * l.w.stride + (l.w.kernel - 1) * l.w.dilation;
  return std::max(l.w.pad + l.w.in, reach + 1);
}

// NaN and Inf are not zero; each part of a pixel's entries is in channel order. The
// portable lister reads the input a channel row at a time (contiguous): once to count,
// then to fill. Every value is written to the next slot of its part, which advances on
// non-zeros only, so nothing branches on the data; zeros go to the second part's next
// slot, which a later non-zero or the spare slot after each pixel takes.
int64_t ListRow(const Layer& l, const Lists& s, int64_t n, int64_t nl, int64_t iy, int64_t g, int64_t k, int32_t* next,
                float* scratch) {
  const int64_t b = s.block(nl, iy, g, k, l), in_w = l.w.in, plane = l.h.in * in_w, pad = l.w.pad;
  Entry* e = s.entries_of(b, l);
  int32_t* start = s.starts_of(b);
  int32_t* both = s.both_of(b);
  const int64_t c0 = g * l.cg + k * l.chunk, cn = std::min(l.chunk, l.cg - k * l.chunk);
  const float* src = l.x + ((n * l.channels + c0) * l.h.in + iy) * in_w;
  const float* next_row = iy + 1 < l.h.in ? src + in_w : nullptr;
  if (Select().list != nullptr) {
    return Select().list(ListIn{src, next_row, plane, cn, in_w, pad, s.cols,
                                static_cast<int32_t>(k * l.chunk * l.chan_step), static_cast<int32_t>(l.chan_step),
                                l.pair, l.few, e, start, both, scratch});
  }
  // The input column paired with ix, or -1 when that one is padding or nothing is paired.
  auto partner = [&](int64_t ix) {
    const int64_t p = ((ix + pad) ^ 1) - pad;
    return l.pair && p >= 0 && p < in_w ? p : -1;
  };
  int32_t* common = next;        // per pixel: non-zeros shared with its partner, then where the next one goes
  int32_t* other = next + in_w;  // per pixel: all non-zeros, then where the next unshared one goes
  std::fill(next, next + 2 * in_w, 0);
  for (int64_t c = 0; c < cn; ++c) {
    const float* row = src + c * plane;
    for (int64_t ix = 0; ix < in_w && next_row != nullptr; ix += 16) __builtin_prefetch(next_row + c * plane + ix);
    for (int64_t ix = 0; ix < in_w; ++ix) {
      const int64_t p = partner(ix);
      const int32_t nz = row[ix] != 0.0f ? 1 : 0;
      other[ix] += nz;
      common[ix] += nz & (p >= 0 ? (row[p] != 0.0f ? 1 : 0) : 0);
    }
  }
  int32_t at = 0;
  for (int64_t q = 0; q < s.cols; ++q) {  // padded columns hold no entries but their spare slot
    start[q] = at;
    const int64_t ix = q - pad;
    const bool inside = ix >= 0 && ix < in_w;
    if (q % 2 == 0) both[q / 2] = inside ? common[ix] : 0;
    if (inside) {
      const int32_t count = other[ix], shared = common[ix];
      common[ix] = at;
      other[ix] = at + shared;
      at += count;
    }
    ++at;
  }
  start[s.cols] = at++;
  for (int64_t c = 0; c < cn; ++c) {
    const int32_t off = static_cast<int32_t>((k * l.chunk + c) * l.chan_step);  // channel within the group
    const float* row = src + c * plane;
    for (int64_t ix = 0; ix < in_w; ++ix) {
      const int64_t p = partner(ix);
      const float v = row[ix];
      const int32_t nz = v != 0.0f ? 1 : 0;
      const int32_t shared = nz & (p >= 0 ? (row[p] != 0.0f ? 1 : 0) : 0);
      e[shared != 0 ? common[ix] : other[ix]] = Entry{v, off};
      common[ix] += shared;
      other[ix] += nz - shared;
    }
  }
  return at - (s.cols + 1);
}

}  // namespace sparse_conv
}  // namespace exprune
