// The tile kernels of sparse_conv_tile.h written once over a vector type. Each
// instruction-set file (sparse_conv_tile_<isa>.cc) defines a traits struct `Vec` and
// includes this file:
//
//   static constexpr int kLanes;  using V = <kLanes floats>;  using M = <a lane mask>;
//   V Zero(); V Set1(float x); V Load(const float* p); void Store(float* p, V v);
//   M Mask(int n): lanes [0, n) (none for n <= 0, all for n >= kLanes);
//   V LoadMasked(const float* p, M m): lanes in m from p, the rest 0, nothing else read;
//   V Fma(V a, V b, V c): a * b + c;  V Add(V a, V b);
//   void StoreMasked(float* p, M m, V v): lanes in m to p, nothing else written;
//   V Relu(V v, V clip): per lane v < 0 ? 0 : v, then > clip ? clip : v (NaN stays NaN);
//   void Transpose(V (&r)[kLanes]): lane i of r[k] becomes lane k of r[i];
//   void Pin(V& v): v stays in a register (an optimisation barrier, or nothing).
//
// Everything here has internal linkage and only <cstdint> is used: the files are built
// with different -m flags, so no inline function may be shared between them (the
// linker would keep one copy, possibly one this CPU cannot run).
#pragma once

#include <cstdint>

#include "sparse_conv_tile.h"

namespace exprune {
namespace sparse_conv {
namespace {

// Compile-time loops: f(Int<I>{}) for I in [B, E). Register tiles need every index
// known at compile time, so that the accumulators stay in registers.
template <int N>
struct Int {
  static constexpr int value = N;
};
template <int B, int E>
struct Unroll {
  template <typename F>
  static inline __attribute__((always_inline)) void Run(F& f) {
    if constexpr (B < E) {
      f(Int<B>{});
      Unroll<B + 1, E>::Run(f);
    }
  }
};

// The lanes of each vector that hold output channels of the block (a partial block
// may leave whole vectors empty).
template <int NV>
struct Masks {
  typename Vec::M m[NV];
  explicit Masks(int lanes) {
    for (int v = 0; v < NV; ++v) m[v] = Vec::Mask(lanes - v * Vec::kLanes);
  }
};

// Vector v of a tap's weights at w; a partial block (not Full) reads only its own lanes.
template <int NV, bool Full>
inline __attribute__((always_inline)) typename Vec::V WeightVector(const float* w, int v, const Masks<NV>& m) {
  if constexpr (Full) return Vec::Load(w + v * Vec::kLanes);
  return Vec::LoadMasked(w + v * Vec::kLanes, m.m[v]);
}

// acc[j][v] += x * w[v * kLanes ...] for the NV vectors of one tap.
template <int NV, bool Full, int T>
inline __attribute__((always_inline)) void Accumulate(typename Vec::V (&acc)[T][NV], int j, typename Vec::V x,
                                                      const float* w, const Masks<NV>& m) {
  auto one = [&](auto vi) {
    constexpr int v = decltype(vi)::value;
    acc[j][v] = Vec::Fma(x, WeightVector<NV, Full>(w, v, m), acc[j][v]);
  };
  Unroll<0, NV>::Run(one);
}

// The tile's starting sums: zero, or the partial sums of earlier channels in `out`.
template <int NV, int T>
inline __attribute__((always_inline)) void StartTile(typename Vec::V (&acc)[T][NV], const Tile& a) {
  for (int j = 0; j < T; ++j) {
    for (int v = 0; v < NV; ++v) {
      acc[j][v] = a.accumulate ? Vec::Load(a.out + (j * NV + v) * Vec::kLanes) : Vec::Zero();
    }
  }
}

template <int NV, int T>
inline __attribute__((always_inline)) void StoreTile(typename Vec::V (&acc)[T][NV], float* out) {
  for (int j = 0; j < T; ++j) {
    for (int v = 0; v < NV; ++v) Vec::Store(out + (j * NV + v) * Vec::kLanes, acc[j][v]);
  }
}

// One tap of a channel non-zero in both columns I and I + 1: its NV weight vectors are
// loaded once and multiplied into output I - KX by x0 and output I + 1 - KX by x1,
// where those are outputs of the tile.
template <int NV, bool Full, int T, int I, int KX>
inline __attribute__((always_inline)) void AccumulatePair(typename Vec::V (&acc)[T][NV], typename Vec::V x0,
                                                          typename Vec::V x1, const float* w, const Masks<NV>& m) {
  constexpr int j0 = I - KX, j1 = I + 1 - KX;
  constexpr bool use0 = j0 >= 0 && j0 < T, use1 = j1 >= 0 && j1 < T;
  auto one = [&](auto vi) {
    constexpr int v = decltype(vi)::value;
    typename Vec::V wv = WeightVector<NV, Full>(w, v, m);
    if constexpr (use0 && use1) Vec::Pin(wv);
    if constexpr (use0) acc[j0][v] = Vec::Fma(x0, wv, acc[j0][v]);
    if constexpr (use1) acc[j1][v] = Vec::Fma(x1, wv, acc[j1][v]);
  };
  if constexpr (use0 || use1) Unroll<0, NV>::Run(one);
}

// One step's share of the tile's fetch (Tile::fetch): spread over the column loop, the
// fetches overlap the arithmetic, where a burst of them would stall it.
inline __attribute__((always_inline)) void FetchAhead(int64_t& at, const Tile& a) {
  const int64_t size = a.fetch_end - a.fetch, end = at + a.fetch_step < size ? at + a.fetch_step : size;
  for (; at < end; at += 64) __builtin_prefetch(a.fetch + at, 0, 2);
}

// kw = 3, stride 1, dilation 1: input column i of the tile's T + 2 feeds outputs i - kx.
// Columns go in pairs (col0 is even, as the lists pair columns): first the channels
// non-zero in both, then each column's others.
template <int NV, int T, bool Full>
void Sweep3(const Tile& a) {
  using V = typename Vec::V;
  static_assert(T % 2 == 0, "Sweep3 walks columns in pairs");
  V acc[T][NV];
  StartTile<NV, T>(acc, a);
  const Masks<NV> m(a.lanes);
  int64_t fetch = 0;  // bytes of Tile::fetch fetched
  for (int64_t ky = 0; ky < a.kh; ++ky) {
    const Row r = a.rows[ky];
    if (r.entries == nullptr) continue;
    const float* w0 = a.w + ky * 3 * a.tap;
    const float* w1 = w0 + a.tap;
    const float* w2 = w1 + a.tap;
    const int32_t* st = r.start + a.col0;
    const int32_t* both = r.both + a.col0 / 2;
    // The taps of column i's input e alone.
    auto single = [&](auto ii, const Entry* e) {
      constexpr int i = decltype(ii)::value;
      const V x = Vec::Set1(e->v);
      const int64_t off = e->w_off;
      if constexpr (i < T) Accumulate<NV, Full, T>(acc, i, x, w0 + off, m);
      if constexpr (i >= 1 && i - 1 < T) Accumulate<NV, Full, T>(acc, i - 1, x, w1 + off, m);
      if constexpr (i >= 2) Accumulate<NV, Full, T>(acc, i - 2, x, w2 + off, m);
    };
    // Columns i and i + 1 on a channel non-zero in both: each weight loaded once.
    auto shared = [&](auto ii, const Entry* e0, const Entry* e1) {
      constexpr int i = decltype(ii)::value;
      const V x0 = Vec::Set1(e0->v), x1 = Vec::Set1(e1->v);
      const int64_t off = e0->w_off;
      AccumulatePair<NV, Full, T, i, 0>(acc, x0, x1, w0 + off, m);
      AccumulatePair<NV, Full, T, i, 1>(acc, x0, x1, w1 + off, m);
      AccumulatePair<NV, Full, T, i, 2>(acc, x0, x1, w2 + off, m);
    };
    // The shared channels first, then each column's others.
    auto pair = [&](auto pp) {
      constexpr int i = 2 * decltype(pp)::value;
      FetchAhead(fetch, a);
      const Entry* e0 = r.entries + st[i];
      const Entry* e1 = r.entries + st[i + 1];
      for (const Entry* const end = e0 + both[i / 2]; e0 != end; ++e0, ++e1) shared(Int<i>{}, e0, e1);
      for (const Entry* const end = r.entries + (st[i + 1] - 1); e0 != end; ++e0) single(Int<i>{}, e0);
      for (const Entry* const end = r.entries + (st[i + 2] - 1); e1 != end; ++e1) single(Int<i + 1>{}, e1);
    };
    Unroll<0, T / 2 + 1>::Run(pair);
  }
  StoreTile<NV, T>(acc, a.out);
}

// Any kernel width, stride and dilation: one pass over the tile's columns per kernel
// column, output j reading padded column col0 + kx * dilation + j * stride.
template <int NV, int T, bool Full>
void Taps(const Tile& a) {
  using V = typename Vec::V;
  V acc[T][NV];
  StartTile<NV, T>(acc, a);
  const Masks<NV> m(a.lanes);
  int64_t fetch = 0;  // bytes of Tile::fetch fetched
  for (int64_t ky = 0; ky < a.kh; ++ky) {
    const Row r = a.rows[ky];
    if (r.entries == nullptr) continue;
    for (int64_t kx = 0; kx < a.kw; ++kx) {
      const float* wk = a.w + (ky * a.kw + kx) * a.tap;
      const int64_t q0 = a.col0 + kx * a.dilation, stride = a.stride;
      // Two output positions at a time, their lists walked side by side: each entry
      // alone updates only NV accumulators, too few to hide the multiply-add latency.
      auto pair = [&](auto jj) {
        constexpr int j = 2 * decltype(jj)::value;
        FetchAhead(fetch, a);
        const int64_t q = q0 + j * stride, q1 = q + stride;
        const Entry* e0 = r.entries + r.start[q];
        const Entry* e1 = r.entries + r.start[q1];
        const Entry* end0 = r.entries + (r.start[q + 1] - 1);
        const Entry* end1 = r.entries + (r.start[q1 + 1] - 1);
        for (; e0 != end0 && e1 != end1; ++e0, ++e1) {
          Accumulate<NV, Full, T>(acc, j, Vec::Set1(e0->v), wk + e0->w_off, m);
          Accumulate<NV, Full, T>(acc, j + 1, Vec::Set1(e1->v), wk + e1->w_off, m);
        }
        for (; e0 != end0; ++e0) Accumulate<NV, Full, T>(acc, j, Vec::Set1(e0->v), wk + e0->w_off, m);
        for (; e1 != end1; ++e1) Accumulate<NV, Full, T>(acc, j + 1, Vec::Set1(e1->v), wk + e1->w_off, m);
      };
      static_assert(T % 2 == 0, "Taps walks positions in pairs");
      Unroll<0, T / 2>::Run(pair);
    }
  }
  StoreTile<NV, T>(acc, a.out);
}

// The sums of kLanes positions by kLanes channels are transposed in registers, so that
// each channel's positions leave in one (masked) store instead of one store apiece.
void Finish(const Out& o) {
  using V = typename Vec::V;
  constexpr int kL = Vec::kLanes;
  const V zero = Vec::Zero(), clip = Vec::Set1(o.clip_max);
  for (int64_t p0 = 0; p0 < o.count; p0 += kL) {
    const int np = static_cast<int>(o.count - p0 < kL ? o.count - p0 : kL);
    const typename Vec::M pm = Vec::Mask(np);
    for (int c0 = 0; c0 < o.lanes; c0 += kL) {
      V r[kL];
      for (int i = 0; i < kL; ++i) r[i] = i < np ? Vec::Load(o.sums + (p0 + i) * o.stride + c0) : zero;
      Vec::Transpose(r);
      const int nc = o.lanes - c0 < kL ? o.lanes - c0 : kL;
      for (int k = 0; k < nc; ++k) {
        const int64_t at = (c0 + k) * o.plane + p0;
        // The scalar order: (sum + bias) + residual, then the activation.
        V v = Vec::Add(r[k], Vec::Set1(o.bias != nullptr ? o.bias[c0 + k] : 0.0f));
        if (o.res != nullptr) v = Vec::Add(v, Vec::LoadMasked(o.res + at, pm));
        if (o.relu) v = Vec::Relu(v, clip);
        Vec::StoreMasked(o.y + at, pm, v);
      }
    }
  }
}

template <int NV, int T>
constexpr Shape MakeShape() {
  return Shape{NV, T, {Sweep3<NV, T, false>, Sweep3<NV, T, true>}, {Taps<NV, T, false>, Taps<NV, T, true>}};
}

}  // namespace
}  // namespace sparse_conv
}  // namespace exprune
