// The kernels of conv_tail.h written once over a vector type. Each instruction-set
// file (conv_tail_<isa>.cc) defines a traits struct `Vec` and includes this file:
//
//   static constexpr int kLanes;  using V = <kLanes floats>;
//   V Zero(); V Load(const float* p); V Broadcast(const float* p);
//   V LoadN(const float* p, int n): lanes [0, n) from p, the rest 0, nothing else read;
//   V Fma(V a, V b, V c): a * b + c (fused where the instruction set has it);
//   float Sum(V v): the lanes added in a fixed tree;
//   template <int N> void SumN(const V* v, float* out): out[i] = Sum(v[i]), bit for bit;
//   float Act(float v, float clip_max): act() of kernel_util.h, branch-free if it can be;
//   void Finish(V dot, int a, int n, const float* partial, const float* res, float bias,
//               const uint8_t* keep, float* y, float clip_max):
//       for lanes j in [a, a + n) and i = j - a, where keep[i] != 0:
//       y[i] = act(partial[i] + dot[j] + (bias + res[i])) (res may be null: base = bias),
//       rounded exactly as the scalar code in conv_relu.cc. Only elements [0, n) of
//       partial, res and y are touched; keep may be read from -a to kLanes - a;
//   int Compact(const uint8_t* keep, int n, int64_t p, int64_t off, int64_t step,
//               int64_t* pos, int64_t* offs):
//       appends p + i and off + i * step for every i < n with keep[i] != 0 (bytes are 0
//       or 1) to pos and offs and returns how many; may write up to 16 entries past them
//       and read keep up to 16 bytes past n;
//   bool Transpose16(const float* src, int64_t ss, float* dst, int64_t ds): a 16 x 16
//       block transposed, or false (nothing done) where there is no fast way.
//
// Everything here has internal linkage, and only <cstdint> is used: the files are
// built with different -m flags, so no inline function may be shared between them
// (the linker would keep one copy, possibly one this CPU cannot run).
#pragma once

#include <cstdint>

#include "conv_tail.h"

namespace exprune {
namespace conv_tail {
namespace {

// ------------------------------------------------------------------ dense

// A run of lanes [lane, lane + n) of a dense block's vector that are output
// positions [i, i + n) of the plane.
struct Piece {
  int lane, n;
  int64_t i;
};

// The pieces of the vector of slots [q, q + kLanes): at most kLanes. Returns how many.
inline int SlotPieces(int64_t q, const DenseOut& out, Piece* pieces) {
  constexpr int kL = Vec::kLanes;
  int count = 0, lane = 0;
  int64_t oy = q / out.pitch, ox = q % out.pitch;
  while (lane < kL && oy * out.pitch + ox < out.end) {
    if (ox >= out.out_w) {  // dropped slots up to the next row
      lane += static_cast<int>(out.pitch - ox < kL - lane ? out.pitch - ox : kL - lane);
      ++oy;
      ox = 0;
      continue;
    }
    int64_t n = out.out_w - ox;
    if (n > kL - lane) n = kL - lane;
    if (n > out.end - (oy * out.pitch + ox)) n = out.end - (oy * out.pitch + ox);
    pieces[count++] = Piece{lane, static_cast<int>(n), oy * out.out_w + ox};
    lane += static_cast<int>(n);
    ox += n;
  }
  return count;
}

// R outputs x NV vectors of positions; the accumulators stay in registers.
template <int R, int NV>
void DenseBlock(const float* x, const int64_t* off, int64_t length, const float* const* w, const DenseOut& out) {
  using V = typename Vec::V;
  V acc[R][NV];
  const float* wr[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    wr[r] = w[r];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = Vec::Zero();
  }
  for (int64_t l = 0; l < length; ++l) {
    const float* xl = x + off[l];
    V xv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) xv[v] = Vec::Load(xl + v * Vec::kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const V b = Vec::Broadcast(wr[r] + l);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = Vec::Fma(b, xv[v], acc[r][v]);
    }
  }
  Piece pieces[NV][Vec::kLanes];
  int npieces[NV];
  for (int v = 0; v < NV; ++v) npieces[v] = SlotPieces(out.q0 + v * Vec::kLanes, out, pieces[v]);
  const float* res = out.res;
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    const int64_t off = r * out.stride;
    const float bias = out.bias[r];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      for (int k = 0; k < npieces[v]; ++k) {
        const Piece& pc = pieces[v][k];
        const int64_t i = off + pc.i;
        Vec::Finish(acc[r][v], pc.lane, pc.n, out.partial + i, res != nullptr ? res + i : nullptr, bias,
                    out.keep + i, out.y + i, out.clip_max);
      }
    }
  }
}

template <int NV, int R>
void DenseDispatch(const float* x, const int64_t* off, int64_t length, const float* const* w, int nrows,
                   const DenseOut& out) {
  if constexpr (R > 1) {
    if (nrows < R) return DenseDispatch<NV, R - 1>(x, off, length, w, nrows, out);
  }
  DenseBlock<R, NV>(x, off, length, w, out);
}

// ------------------------------------------------------------------ sparse

template <int G>
void SparseGroup(const float* w, const float* const* x, const int64_t* seg_off, int64_t nseg, int64_t seglen,
                 float* out) {
  using V = typename Vec::V;
  constexpr int kL = Vec::kLanes;
  V acc[G];
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) acc[g] = Vec::Zero();
  const int64_t full = seglen - seglen % kL;
  const int rest = static_cast<int>(seglen - full);
  for (int64_t s = 0; s < nseg; ++s) {
    const float* ws = w + s * seglen;
    const float* xs[G];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) xs[g] = x[g] + seg_off[s];
    for (int64_t j = 0; j < full; j += kL) {
      const V wv = Vec::Load(ws + j);
#pragma GCC unroll 16
      for (int g = 0; g < G; ++g) acc[g] = Vec::Fma(wv, Vec::Load(xs[g] + j), acc[g]);
    }
    if (rest != 0) {
      const V wv = Vec::LoadN(ws + full, rest);
#pragma GCC unroll 16
      for (int g = 0; g < G; ++g) acc[g] = Vec::Fma(wv, Vec::LoadN(xs[g] + full, rest), acc[g]);
    }
  }
  Vec::template SumN<G>(acc, out);
}

// Finishes `count` (<= G) survivors: positions pos[], patches at x + offs[].
template <int G>
void SparseFlush(const SparseJob& job, const int64_t* pos, const int64_t* offs, int count) {
  if constexpr (G > 1) {
    if (count < G) return SparseFlush<G - 1>(job, pos, offs, count);
  }
  const float* x[G];
  float dots[G];
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
    x[g] = job.x + offs[g];
    // Scattered outputs miss the cache; the dot products hide the fetch.
    __builtin_prefetch(job.partial + pos[g], 0);
    __builtin_prefetch(job.y + pos[g], 1);
    if (job.res != nullptr) __builtin_prefetch(job.res + pos[g], 0);
  }
  SparseGroup<G>(job.w, x, job.seg_off, job.nseg, job.seglen, dots);
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
    const int64_t p = pos[g];
    const float base = job.res != nullptr ? job.bias + job.res[p] : job.bias;
    job.y[p] = Vec::Act(job.partial[p] + dots[g] + base, job.clip_max);
  }
}

template <int G>
void SparseRun(const SparseJob& job) {
  constexpr int kChunk = 64;
  // Survivors not yet finished (< G) plus one compacted chunk, plus a vector of slack.
  int64_t pos[G + kChunk + 16], offs[G + kChunk + 16];
  int count = 0;
  for (int64_t r = 0; r < job.nranges; ++r) {
    const int64_t p0 = job.ranges[2 * r], p1 = job.ranges[2 * r + 1], oy = p0 / job.out_w;
    const int64_t row_off = oy * (job.row_step - job.out_w * job.col_step);  // patch of p at row_off + p * col_step
    for (int64_t q = p0; q < p1; q += kChunk) {
      const int n = static_cast<int>(p1 - q < kChunk ? p1 - q : kChunk);
      count += Vec::Compact(job.keep + q, n, q, row_off + q * job.col_step, job.col_step, pos + count, offs + count);
      int done = 0;
      for (; count - done >= G; done += G) SparseFlush<G>(job, pos + done, offs + done, G);
      for (int i = done; i < count; ++i) {
        pos[i - done] = pos[i];
        offs[i - done] = offs[i];
      }
      count -= done;
    }
  }
  if (count > 0) SparseFlush<G>(job, pos, offs, count);
}

// ------------------------------------------------------------------ transpose

void Transpose(const float* src, int64_t ss, int64_t rows, int64_t cols, float* dst, int64_t ds) {
  constexpr int64_t kB = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += kB) {
    for (int64_t j0 = 0; j0 < cols; j0 += kB) {
      if (i0 + kB <= rows && j0 + kB <= cols && Vec::Transpose16(src + i0 * ss + j0, ss, dst + j0 * ds + i0, ds)) {
        continue;
      }
      const int64_t i1 = i0 + kB < rows ? i0 + kB : rows, j1 = j0 + kB < cols ? j0 + kB : cols;
      for (int64_t j = j0; j < j1; ++j) {
        for (int64_t i = i0; i < i1; ++i) dst[j * ds + i] = src[i * ss + j];
      }
    }
  }
}

// ------------------------------------------------------------------ decision

// Branch-free so that it vectorises; the arithmetic is that of Pruned() in
// kernel_util.h (the build disables contraction, so it rounds identically).
int64_t DecideImpl(const float* partial, const float* res, float bias, double ratio, double threshold, int64_t n,
                   float* y, uint8_t* keep) {
  int64_t kept = 0;
  if (res != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      const float base = bias + res[i];
      const bool k = !(static_cast<double>(base) + ratio * static_cast<double>(partial[i]) < threshold);
      keep[i] = k;
      kept += k;
    }
  } else {
    const double b = static_cast<double>(bias);
    for (int64_t i = 0; i < n; ++i) {
      const bool k = !(b + ratio * static_cast<double>(partial[i]) < threshold);
      keep[i] = k;
      kept += k;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!keep[i]) y[i] = 0.0f;
  }
  return kept;
}

}  // namespace
}  // namespace conv_tail
}  // namespace exprune
