// Probe for issue 16 (kernel speed): ExPruneSparseConv's 3x3 list tile (Sweep3, AVX-512,
// two vectors of output channels x 14 positions) against tiles that hold the weights of
// one input channel's three taps in registers and walk input channels outermost. Not
// part of the package build; a single-threaded standalone program (AVX-512 machines):
//
//   g++ -O3 -march=native -std=c++17 -Icustom_ops/src bench/sparse_conv_tile_probe.cc -o /tmp/probe
//   /tmp/probe C S ZEROS [REPEATS] [periodic]
//
// One block of 32 output channels of a 3x3 C -> 32 conv, pad 1, stride 1, over an S x S
// input whose elements are 0 with probability ZEROS (i.i.d.; `periodic`: every other
// element is 0, a pattern branch predictors learn). All output rows, all channels in one
// chunk (the op cuts 128+ channels into chunks); the lists and bitmasks are built before
// timing (their cost is not compared). The weights are 64-byte aligned, as the op's.
// Variants, each checked against a double-precision reference:
//   list    the op's Sweep3 on unpaired lists (each listed input loads its 3 taps x 2
//           weight vectors; the op's paired lists are not built here);
//   pair    the same lists, columns i and i + 3 walked side by side (12 independent
//           multiply-adds per step instead of 6 that depend on the previous entry's);
//   switch  weights in registers; per channel a bitmask window of T + 2 columns, each
//           set bit (tzcnt / blsr) dispatched by a switch to its 1-3 compile-time taps;
//   dense   weights in registers; a channel's window is skipped when its bitmask is 0,
//           otherwise all T + 2 columns are multiplied in (zeros included), no branch;
//   scatter weight-stationary: a channel's 9 taps x 2 weight vectors in registers, each
//           of its non-zero inputs multiplied into the 9 outputs it reaches, whose sums
//           stay in memory (the whole block's, with a border that takes the taps that
//           fall outside): a load and a store per multiply-add instead of a weight load.
// Prints the best of REPEATS times per variant (3 interleaved rounds) and the speedup of
// each over `list` (> 1: faster than the op's tile).
#include "sparse_conv_tile_avx512.cc"  // Vec and the op's tiles, exactly as built

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <vector>

namespace {

using exprune::sparse_conv::Entry;
using exprune::sparse_conv::Row;
using exprune::sparse_conv::Tile;
using V = __m512;
constexpr int kBlock = 32;  // output channels of the block: two vectors
constexpr int kListT = 14;  // positions of the op's AVX-512 two-vector tile

// 64-byte aligned storage, as the op's AlignedFloats: with std::vector's 16-byte
// alignment most 64-byte weight loads straddle two cache lines, which cut the list
// tile's measured rate by a third (1.5-1.6x slower at 50-90% zeros than aligned).
template <typename T>
struct LineAligned {
  using value_type = T;
  LineAligned() = default;
  template <typename U>
  LineAligned(const LineAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  template <typename U>
  bool operator==(const LineAligned<U>&) const { return true; }
  template <typename U>
  bool operator!=(const LineAligned<U>&) const { return false; }
};

struct Problem {
  int c = 0, s = 0, cols = 0, row_floats = 0;  // cols: padded columns (left pad 1 + slack)
  std::vector<float> x;                        // x [C][S][S]
  std::vector<float, LineAligned<float>> w;         // w [C][3][3][32]: the op's blocked copy, line-aligned as there
  std::vector<float> padded;                   // [S][C][cols]: x rows with the left pad
  std::vector<uint64_t> bits;                  // [S][C][5]: non-zero columns of `padded`
  std::vector<Entry> entries;                  // the op's per-column lists, one block per input row
  std::vector<int32_t> start;
  std::vector<int32_t> both;                   // no column pairs (sparse_conv_tile.h): all 0
  std::vector<double> ref;                     // [S][S][32]
  std::vector<float> out;                      // [S][row_floats]
  std::vector<int32_t> cpos, cstart;           // per channel: bordered positions of its non-zeros
  std::vector<float> cval;
  std::vector<float, LineAligned<float>> sums;  // (S + 2) x (S + 2) positions x 32 (scatter)
};

Problem MakeProblem(int c, int s, double zeros, bool periodic) {
  Problem p;
  p.c = c;
  p.s = s;
  p.cols = s + 1 + 2 * kListT + 4;  // every tile's window stays inside
  p.row_floats = (s + 2 * kListT) * kBlock;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.f, 1.f), sym(-1.f, 1.f);
  p.x.resize(size_t(c) * s * s);
  for (size_t k = 0; k < p.x.size(); ++k) {
    const bool zero = periodic ? k % 2 == 0 : u(rng) < zeros;
    p.x[k] = zero ? 0.f : u(rng) + 0.01f;
  }
  p.w.resize(size_t(c) * 9 * kBlock);
  for (float& v : p.w) v = sym(rng);
  p.out.assign(size_t(s) * p.row_floats, 0.f);
  return p;
}

float X(const Problem& p, int c, int iy, int ix) { return p.x[(size_t(c) * p.s + iy) * p.s + ix]; }

void Reference(Problem& p) {
  p.ref.assign(size_t(p.s) * p.s * kBlock, 0.0);
  for (int oy = 0; oy < p.s; ++oy) {
    for (int ox = 0; ox < p.s; ++ox) {
      double* r = p.ref.data() + (size_t(oy) * p.s + ox) * kBlock;
      for (int c = 0; c < p.c; ++c) {
        for (int t = 0; t < 9; ++t) {
          const int iy = oy - 1 + t / 3, ix = ox - 1 + t % 3;
          if (iy < 0 || iy >= p.s || ix < 0 || ix >= p.s) continue;
          const float* w = p.w.data() + (size_t(c) * 9 + t) * kBlock;
          for (int m = 0; m < kBlock; ++m) r[m] += double(X(p, c, iy, ix)) * w[m];
        }
      }
    }
  }
}

// The op's layout (sparse_conv_run.cc ListRow): per padded column its non-zero channels,
// then one spare slot.
void BuildLists(Problem& p) {
  const size_t room = size_t(p.c) * p.s + p.cols;
  p.entries.assign(p.s * room, Entry{0.f, 0});
  p.start.assign(size_t(p.s) * (p.cols + 1), 0);
  p.both.assign(size_t(p.cols) / 2 + 1, 0);
  for (int iy = 0; iy < p.s; ++iy) {
    Entry* e = p.entries.data() + iy * room;
    int32_t* st = p.start.data() + size_t(iy) * (p.cols + 1);
    int32_t at = 0;
    for (int q = 0; q <= p.cols; ++q) {
      st[q] = at;
      const int ix = q - 1;
      for (int c = 0; ix >= 0 && ix < p.s && c < p.c; ++c) {
        if (X(p, c, iy, ix) != 0.f) e[at++] = Entry{X(p, c, iy, ix), c * 9 * kBlock};
      }
      ++at;
    }
  }
}

void BuildBits(Problem& p) {
  p.padded.assign(size_t(p.s) * p.c * p.cols, 0.f);
  p.bits.assign(size_t(p.s) * p.c * 5, 0);
  for (int iy = 0; iy < p.s; ++iy) {
    for (int c = 0; c < p.c; ++c) {
      float* d = p.padded.data() + (size_t(iy) * p.c + c) * p.cols;
      uint64_t* b = p.bits.data() + (size_t(iy) * p.c + c) * 5;
      for (int ix = 0; ix < p.s; ++ix) {
        d[ix + 1] = X(p, c, iy, ix);
        if (d[ix + 1] != 0.f) b[(ix + 1) >> 6] |= uint64_t{1} << ((ix + 1) & 63);
      }
    }
  }
}

// The op's Sweep3 with columns i and i + 3 walked side by side.
template <int T>
__attribute__((noinline)) void PairTile(const Tile& a) {
  using namespace exprune::sparse_conv;
  V acc[T][2];
  StartTile<2, T>(acc, a);
  const Masks<2> m(a.lanes);
  for (int64_t ky = 0; ky < a.kh; ++ky) {
    const Row r = a.rows[ky];
    if (r.entries == nullptr) continue;
    const float* w0 = a.w + ky * 3 * a.tap;
    const int32_t* st = r.start + a.col0;
    auto one = [&](auto ii, const Entry* e) {
      constexpr int i = decltype(ii)::value;
      const V x = Vec::Set1(e->v);
      if constexpr (i < T) Accumulate<2, true, T>(acc, i, x, w0 + e->w_off, m);
      if constexpr (i >= 1 && i - 1 < T) Accumulate<2, true, T>(acc, i - 1, x, w0 + a.tap + e->w_off, m);
      if constexpr (i >= 2) Accumulate<2, true, T>(acc, i - 2, x, w0 + 2 * a.tap + e->w_off, m);
    };
    auto column = [&](auto ii) {
      constexpr int i = decltype(ii)::value;
      if constexpr (i % 6 < 3) {  // columns with i % 6 >= 3 are walked as partners
        const Entry *e0 = r.entries + st[i], *end0 = r.entries + (st[i + 1] - 1);
        if constexpr (i + 3 < T + 2) {
          const Entry *e1 = r.entries + st[i + 3], *end1 = r.entries + (st[i + 4] - 1);
          for (; e0 != end0 && e1 != end1; ++e0, ++e1) {
            one(Int<i>{}, e0);
            one(Int<i + 3>{}, e1);
          }
          for (; e1 != end1; ++e1) one(Int<i + 3>{}, e1);
        }
        for (; e0 != end0; ++e0) one(Int<i>{}, e0);
      }
    };
    Unroll<0, T + 2>::Run(column);
  }
  StoreTile<2, T>(acc, a.out);
}

// Bits [q0, q0 + n) of a row's bitmask (n <= 58).
inline uint64_t Window(const uint64_t* b, int q0, int n) {
  const int word = q0 >> 6, shift = q0 & 63;
  const uint64_t bits = (b[word] >> shift) | ((b[word + 1] << 1) << (63 - shift));
  return bits & ((uint64_t{1} << n) - 1);
}

// Register-weight tiles: output positions [q0, q0 + T) of row oy. Dense = false: each set
// bit of a channel's window is dispatched by a switch; true: the whole window is used.
template <int T, bool Dense>
__attribute__((noinline)) void WindowTile(const Problem& p, int oy, int q0, float* out) {
  V acc[T][2];
  for (int j = 0; j < T; ++j) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
  for (int ky = 0; ky < 3; ++ky) {
    const int iy = oy - 1 + ky;
    if (iy < 0 || iy >= p.s) continue;
    const uint64_t* b = p.bits.data() + size_t(iy) * p.c * 5;
    const float* xq = p.padded.data() + size_t(iy) * p.c * p.cols + q0;
    const float* wc = p.w.data() + ky * 3 * kBlock;
    for (int c = 0; c < p.c; ++c, b += 5, xq += p.cols, wc += 9 * kBlock) {
      uint64_t win = Window(b, q0, T + 2);
      if (win == 0) continue;
      V w[3][2];
      for (int k = 0; k < 3; ++k) {
        w[k][0] = _mm512_loadu_ps(wc + k * kBlock);
        w[k][1] = _mm512_loadu_ps(wc + k * kBlock + 16);
      }
      auto column = [&](auto ii, V xv) {  // input column i feeds outputs i - kx
        constexpr int i = decltype(ii)::value;
        auto tap = [&](auto kk) {
          constexpr int k = decltype(kk)::value, j = i - k;
          if constexpr (j >= 0 && j < T) {
            acc[j][0] = _mm512_fmadd_ps(xv, w[k][0], acc[j][0]);
            acc[j][1] = _mm512_fmadd_ps(xv, w[k][1], acc[j][1]);
          }
        };
        exprune::sparse_conv::Unroll<0, 3>::Run(tap);
      };
      if constexpr (Dense) {
        auto all = [&](auto ii) { column(ii, _mm512_set1_ps(xq[decltype(ii)::value])); };
        exprune::sparse_conv::Unroll<0, T + 2>::Run(all);
      } else {
        using exprune::sparse_conv::Int;
        do {
          const int i = __builtin_ctzll(win);
          win &= win - 1;
          const V xv = _mm512_set1_ps(xq[i]);
          switch (i) {  // one case per window column, T + 2 <= 14
#define PROBE_CASE(I) \
  case I:             \
    column(Int<I>{}, xv); \
    break;
            PROBE_CASE(0) PROBE_CASE(1) PROBE_CASE(2) PROBE_CASE(3) PROBE_CASE(4) PROBE_CASE(5) PROBE_CASE(6)
            PROBE_CASE(7) PROBE_CASE(8) PROBE_CASE(9) PROBE_CASE(10) PROBE_CASE(11) PROBE_CASE(12) PROBE_CASE(13)
#undef PROBE_CASE
            default:
              break;
          }
        } while (win != 0);
      }
    }
  }
  for (int j = 0; j < T; ++j) {
    _mm512_storeu_ps(out + j * kBlock, acc[j][0]);
    _mm512_storeu_ps(out + j * kBlock + 16, acc[j][1]);
  }
}

// Per channel, its non-zero inputs: value and position in the bordered (S + 2)^2 grid.
void BuildChannelLists(Problem& p) {
  const int w = p.s + 2;
  p.cstart.assign(size_t(p.c) + 1, 0);
  for (int c = 0; c < p.c; ++c) {
    p.cstart[c] = int(p.cpos.size());
    for (int iy = 0; iy < p.s; ++iy) {
      for (int ix = 0; ix < p.s; ++ix) {
        if (X(p, c, iy, ix) == 0.f) continue;
        p.cpos.push_back((iy + 1) * w + ix + 1);
        p.cval.push_back(X(p, c, iy, ix));
      }
    }
  }
  p.cstart[p.c] = int(p.cpos.size());
  p.sums.assign(size_t(w) * w * kBlock, 0.f);
}

__attribute__((noinline)) void Scatter(Problem& p) {
  const int w = p.s + 2;
  const int64_t row = int64_t(w) * kBlock;
  float* sums = p.sums.data();
  std::fill(p.sums.begin(), p.sums.end(), 0.f);
  for (int c = 0; c < p.c; ++c) {
    const float* wc = p.w.data() + size_t(c) * 9 * kBlock;
    V wv[9][2];
    for (int t = 0; t < 9; ++t) {
      wv[t][0] = _mm512_load_ps(wc + t * kBlock);
      wv[t][1] = _mm512_load_ps(wc + t * kBlock + 16);
    }
    for (int k = p.cstart[c]; k < p.cstart[c + 1]; ++k) {
      const V x = _mm512_set1_ps(p.cval[k]);
      float* at = sums + int64_t(p.cpos[k]) * kBlock;
      auto tap = [&](auto tt) {  // input (iy, ix) feeds output (iy + 1 - ky, ix + 1 - kx)
        constexpr int t = decltype(tt)::value, ky = t / 3, kx = t % 3;
        float* o = at + (1 - ky) * row + (1 - kx) * kBlock;
        _mm512_store_ps(o, _mm512_fmadd_ps(x, wv[t][0], _mm512_load_ps(o)));
        _mm512_store_ps(o + 16, _mm512_fmadd_ps(x, wv[t][1], _mm512_load_ps(o + 16)));
      };
      exprune::sparse_conv::Unroll<0, 9>::Run(tap);
    }
  }
  for (int oy = 0; oy < p.s; ++oy) {
    for (int ox = 0; ox < p.s; ++ox) {
      std::memcpy(p.out.data() + size_t(oy) * p.row_floats + size_t(ox) * kBlock,
                  sums + (int64_t(oy + 1) * w + ox + 1) * kBlock, kBlock * sizeof(float));
    }
  }
}

template <typename Fn>
void RunLists(Problem& p, Fn fn) {
  const size_t room = size_t(p.c) * p.s + p.cols;
  Row rows[3];
  Tile a{rows, 3, 3, p.w.data(), kBlock, 0, 1, 1, kBlock, nullptr, false};
  for (int oy = 0; oy < p.s; ++oy) {
    for (int ky = 0; ky < 3; ++ky) {
      const int iy = oy - 1 + ky;
      rows[ky] = iy < 0 || iy >= p.s ? Row{nullptr, nullptr, nullptr}
                                     : Row{p.entries.data() + iy * room, p.start.data() + size_t(iy) * (p.cols + 1),
                                           p.both.data()};
    }
    for (int ox0 = 0; ox0 < p.s; ox0 += kListT) {
      a.col0 = ox0;
      a.out = p.out.data() + size_t(oy) * p.row_floats + size_t(ox0) * kBlock;
      fn(a);
    }
  }
}

template <int T, bool Dense>
void RunWindows(Problem& p) {
  for (int oy = 0; oy < p.s; ++oy) {
    for (int ox0 = 0; ox0 < p.s; ox0 += T) {
      WindowTile<T, Dense>(p, oy, ox0, p.out.data() + size_t(oy) * p.row_floats + size_t(ox0) * kBlock);
    }
  }
}

// Largest error relative to the reference's range; 0 when `out` matches.
double MaxError(const Problem& p) {
  double err = 0, range = 1e-6;
  for (int oy = 0; oy < p.s; ++oy) {
    for (int ox = 0; ox < p.s; ++ox) {
      for (int m = 0; m < kBlock; ++m) {
        const double want = p.ref[(size_t(oy) * p.s + ox) * kBlock + m];
        err = std::max(err, std::fabs(p.out[size_t(oy) * p.row_floats + size_t(ox) * kBlock + m] - want));
        range = std::max(range, std::fabs(want));
      }
    }
  }
  return err / range;
}

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Variant {
  const char* name;
  void (*run)(Problem&);
  double best = 1e30, error = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s C S ZEROS [REPEATS] [periodic]\n", argv[0]);
    return 2;
  }
  const int c = std::atoi(argv[1]), s = std::atoi(argv[2]), repeats = argc > 4 ? std::atoi(argv[4]) : 5;
  const double zeros = std::atof(argv[3]);
  const bool periodic = argc > 5 && std::strcmp(argv[5], "periodic") == 0;
  if (c < 1 || s < 1 || s > 200 || repeats < 1 || !(zeros >= 0 && zeros <= 1)) {
    std::fprintf(stderr, "need C >= 1, 1 <= S <= 200, 0 <= ZEROS <= 1, REPEATS >= 1\n");
    return 2;
  }
  Problem p = MakeProblem(c, s, zeros, periodic);
  Reference(p);
  BuildLists(p);
  BuildBits(p);
  BuildChannelLists(p);
  Variant variants[] = {
      {"list", [](Problem& q) { RunLists(q, exprune::sparse_conv::Sweep3<2, kListT, true>); }},
      {"pair", [](Problem& q) { RunLists(q, PairTile<kListT>); }},
      {"switch T=12", RunWindows<12, false>},
      {"switch T=8", RunWindows<8, false>},
      {"dense T=12", RunWindows<12, true>},
      {"dense T=8", RunWindows<8, true>},
      {"scatter", Scatter},
  };
  for (int round = 0; round < 3; ++round) {  // interleaved, so that load changes hit every variant
    for (Variant& v : variants) {
      std::fill(p.out.begin(), p.out.end(), 0.f);
      v.run(p);
      if (round == 0) v.error = MaxError(p);
      for (int r = 0; r < repeats; ++r) {
        const double t0 = Seconds();
        v.run(p);
        v.best = std::min(v.best, Seconds() - t0);
      }
    }
  }
  const double dense_flops = 2.0 * s * s * kBlock * c * 9;
  std::printf("3x3 %d->32 @%dx%d, zeros %.2f%s: best of %d x 3 rounds, 1 thread\n", c, s, s, zeros,
              periodic ? " (periodic)" : " (iid)", repeats);
  for (const Variant& v : variants) {
    std::printf("  %-12s %9.3f ms  %6.1f GFLOP/s dense-equivalent  speedup vs list %.2f  max rel. error %.1e\n",
                v.name, v.best * 1e3, dense_flops / v.best * 1e-9, variants[0].best / v.best, v.error);
  }
  for (const Variant& v : variants) {
    if (v.error > 1e-5) return 1;
  }
  return 0;
}
