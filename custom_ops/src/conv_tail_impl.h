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
        Vec::Finish(acc[r][v], pc.lane, pc.n, out.partial + i, res != nullptr ? res + i : nullptr, bias, out.keep + i,
                    out.y + i, out.clip_max);
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

// StatsPruned() of kernel_util.h for one output, rounded identically: the exact rule.
bool StatsExact(float base, float partial, float partial_sq, double t_k, double t_n, double z_crit) {
  const double inf = __builtin_inf();
  const double mean = static_cast<double>(partial) / t_k;
  const double m = mean + static_cast<double>(base) / t_n;
  const double v = static_cast<double>(partial_sq) / t_k - mean * mean;
  const double z_var = m / __builtin_sqrt((v > 0.0 ? v : 1.0) / t_k);
  const double z_sign = m < 0.0 ? -inf : (m > 0.0 ? inf : m * 0.0);
  const double z = v > 0.0 ? z_var : z_sign;
  return z < z_crit && v == v;
}

// The StatsTest rule for a run of outputs, deciding exactly as StatsExact() does
// but without its four divisions and square root for almost every output.
//
// A first, branch-free pass recomputes m and v with reciprocals (mean' = p * (1/t_k),
// ...), which differ from the exact rule's m and v by at most ~8u times the magnitudes
// they are formed from (u = 2^-53); em and ev bound that with a wide margin (64u).
// Where the sign of m and of v, and which side of z_crit the z of the rule lies on,
// hold for every m, v within those bounds (and the final sqrt/division's ~3u), the
// output is decided there: |z| vs |z_crit| is compared squared, m^2 t_k vs z_crit^2 v,
// again with a 64u margin. Everything else - values within a few ulps of the boundary
// or of m = 0 or v = 0, tiny v, huge, infinite or NaN inputs - is marked undecided
// (2) and decided by StatsExact() in a second pass. kSign is the sign of z_crit.
template <int kSign, bool kRes>
int64_t StatsFilter(const float* partial, const float* partial_sq, const float* res, float bias, double t_k, double t_n,
                    double z_crit, int64_t n, uint8_t* keep) {
  constexpr double kE = 64.0 * 0x1p-53, kBig = 1e100, kTiny = 1e-200;
  const double rk = 1.0 / t_k, rn = 1.0 / t_n, zc2 = z_crit * z_crit;
  int64_t undecided = 0;
  // Bitwise & and | on the conditions: no short-circuit branches, so it vectorises.
#pragma omp simd reduction(+ : undecided)
  for (int64_t i = 0; i < n; ++i) {
    const float base = kRes ? bias + res[i] : bias;
    const double mean = static_cast<double>(partial[i]) * rk, bn = static_cast<double>(base) * rn;
    const double q = static_cast<double>(partial_sq[i]) * rk, mm = mean * mean;
    const double am = __builtin_fabs(mean), ab = __builtin_fabs(bn), aq = __builtin_fabs(q);
    const double m = mean + bn, v = q - mm;
    const double em = kE * (am + ab), ev = kE * (aq + mm);
    const int ok = (am < kBig) & (ab < kBig) & (aq < kBig);  // also 0 for NaN
    const int m_neg = m<-em, m_pos = m> em;
    const int v_pos = v - ev > kTiny, v_nonpos = v + ev <= 0.0;
    const double ma = __builtin_fabs(m), m_lo = ma - em, m_hi = ma + em;
    const double a_lo = m_lo * m_lo * t_k * (1.0 - kE), a_hi = m_hi * m_hi * t_k * (1.0 + kE);
    const double b_lo = zc2 * (v - ev) * (1.0 - kE), b_hi = zc2 * (v + ev) * (1.0 + kE);
    const int big = v_pos & (a_lo > b_hi);    // |z| > |z_crit| for sure
    const int small = v_pos & (a_hi < b_lo);  // |z| < |z_crit| for sure
    int prune, keep_it;
    if constexpr (kSign < 0) {  // pruned iff z is more negative than z_crit
      prune = m_neg & (v_nonpos | big);
      keep_it = m_pos | (m_neg & small);
    } else if constexpr (kSign > 0) {  // pruned iff z < 0, or 0 <= z < z_crit
      prune = m_neg | (m_pos & small);
      keep_it = m_pos & (v_nonpos | big);
    } else {  // z_crit = 0: pruned iff m < 0
      prune = m_neg;
      keep_it = m_pos;
    }
    const int open = 1 - (ok & (prune | keep_it));
    keep[i] = static_cast<uint8_t>((ok & keep_it) + 2 * open);  // 1 keep, 0 prune, 2 undecided
    undecided += open;
  }
  return undecided;
}

template <int kSign>
int64_t StatsFilterRes(const float* partial, const float* partial_sq, const float* res, float bias, double t_k,
                       double t_n, double z_crit, int64_t n, uint8_t* keep) {
  return res != nullptr ? StatsFilter<kSign, true>(partial, partial_sq, res, bias, t_k, t_n, z_crit, n, keep)
                        : StatsFilter<kSign, false>(partial, partial_sq, res, bias, t_k, t_n, z_crit, n, keep);
}

int64_t DecideStatsImpl(const float* partial, const float* partial_sq, const float* res, float bias, double t_k,
                        double t_n, double z_crit, int64_t n, float* y, uint8_t* keep) {
  const double inf = __builtin_inf();
  if (z_crit == -inf) {  // z < -inf never holds
    for (int64_t i = 0; i < n; ++i) keep[i] = 1;
    return n;
  }
  int64_t undecided = n;
  if (z_crit < 0.0) {
    undecided = StatsFilterRes<-1>(partial, partial_sq, res, bias, t_k, t_n, z_crit, n, keep);
  } else if (z_crit > 0.0 && z_crit < inf) {
    undecided = StatsFilterRes<1>(partial, partial_sq, res, bias, t_k, t_n, z_crit, n, keep);
  } else if (z_crit == 0.0) {
    undecided = StatsFilterRes<0>(partial, partial_sq, res, bias, t_k, t_n, z_crit, n, keep);
  } else {
    for (int64_t i = 0; i < n; ++i) keep[i] = 2;
  }
  if (undecided > 0) {
    for (int64_t i = 0; i < n; ++i) {
      if (keep[i] == 2) {
        const float base = res != nullptr ? bias + res[i] : bias;
        keep[i] = !StatsExact(base, partial[i], partial_sq[i], t_k, t_n, z_crit);
      }
    }
  }
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    kept += keep[i];
    if (!keep[i]) y[i] = 0.0f;
  }
  return kept;
}

// CertifiedPruned() of kernel_util.h for a run of outputs, likewise.
int64_t DecideCertifiedImpl(const float* partial, const float* res, float bias, float w_pos_sum, float w_pos_norm,
                            const float* xmax, const double* xnorm, int64_t n, float* y, uint8_t* keep) {
  const double ws = static_cast<double>(w_pos_sum), wn = static_cast<double>(w_pos_norm);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float base = res != nullptr ? bias + res[i] : bias;
    const double a = static_cast<double>(xmax[i]) * ws, b = xnorm[i] * wn;
    const double bound = (a < b || a != a) ? a : b;  // NaN if either is
    const bool k = !(static_cast<double>(base) + static_cast<double>(partial[i]) + bound < 0.0);
    keep[i] = k;
    kept += k;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!keep[i]) y[i] = 0.0f;
  }
  return kept;
}

}  // namespace
}  // namespace conv_tail
}  // namespace exprune
