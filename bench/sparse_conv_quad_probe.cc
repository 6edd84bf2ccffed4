// Probe for issue 16 (kernel speed on cores with two 512-bit multiply-add units): a 3x3
// tile over two output rows whose lists share each channel's weights over 2x2 blocks of
// inputs ("quads"), against the op's Sweep3 (AVX-512, two vectors x 14 positions) on the
// op's paired lists. Not part of the package build; a standalone single-threaded program
// for AVX-512 machines:
//
//   g++ -O3 -march=native -std=c++17 -Icustom_ops/src bench/sparse_conv_quad_probe.cc -o /tmp/quad_probe
//   /tmp/quad_probe C S ZEROS [iid | blocks DROP B]
//
// One block of 32 output channels of a 3x3 C -> 32 conv (pad 1, stride 1) over an S x S
// input. `iid`: each input is 0 with probability ZEROS. `blocks`: each channel's B x B
// blocks of positions are all zero or all non-zero, then each non-zero is dropped with
// probability DROP (ZEROS overall), so that the non-zeros cluster as a real ReLU's do.
// The quad tile's lists, for input rows (a, a + 1) at every a (a 3x3 kernel reaches each
// input row from two output rows), hold per column pair the channels non-zero at all four
// positions (one load of each weight vector for four multiply-adds), then per position
// the rest. Lists are built before timing. Prints the best time of each over 3 x 15 runs,
// the largest relative error against a double-precision reference (sampled outputs),
// and the share of non-zeros that sit in quads (each input row counted in both pairs).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <vector>

#include "sparse_conv_tile_avx512.cc"

using exprune::sparse_conv::Entry;
using exprune::sparse_conv::Int;
using exprune::sparse_conv::Row;
using exprune::sparse_conv::Tile;
using exprune::sparse_conv::Unroll;
using V = __m512;
constexpr int kBlock = 32;

struct Quad {
  float v[4];
  int32_t off;
  int32_t pad_;
};

int C, S, COLS;
std::vector<float> X;   // [C][S][S]
std::vector<float> W_;  // [C][3][3][32], 64-byte aligned at W
float* W = nullptr;
float x(int c, int iy, int ix) {
  return (iy < 0 || iy >= S || ix < 0 || ix >= S) ? 0.f : X[(size_t(c) * S + iy) * S + ix];
}

// Paired lists per input row (the op's layout: shared first, then the rest; pad 1).
std::vector<std::vector<Entry>> pe;
std::vector<std::vector<int32_t>> ps, pb;
void BuildPaired() {
  pe.assign(S, {});
  ps.assign(S, {});
  pb.assign(S, {});
  for (int iy = 0; iy < S; ++iy) {
    auto& e = pe[iy];
    auto& st = ps[iy];
    auto& b = pb[iy];
    st.assign(COLS + 1, 0);
    b.assign(COLS / 2 + 1, 0);
    for (int q = 0; q < COLS; ++q) {
      st[q] = int32_t(e.size());
      const int ix = q - 1, px = (q ^ 1) - 1;
      int shared = 0;
      for (int c = 0; c < C; ++c)
        if (x(c, iy, ix) != 0.f && x(c, iy, px) != 0.f) {
          e.push_back({x(c, iy, ix), c * 9 * kBlock});
          ++shared;
        }
      if (q % 2 == 0) b[q / 2] = shared;
      for (int c = 0; c < C; ++c)
        if (x(c, iy, ix) != 0.f && !(x(c, iy, px) != 0.f)) e.push_back({x(c, iy, ix), c * 9 * kBlock});
      e.push_back({0.f, 0});
    }
    st[COLS] = int32_t(e.size());
    e.push_back({0.f, 0});
  }
}

// Row-pair lists: for input rows (a, a + 1), a = -1 .. S - 1, per column pair p (padded
// columns 2p, 2p + 1): the quads (channels non-zero at all four), then per position
// (row r, column q) the rest as singles.
struct RowPair {
  std::vector<Quad> quads;
  std::vector<int32_t> qstart;
  std::vector<Entry> singles;
  std::vector<int32_t> sstart;
};
std::vector<RowPair> rp;
void BuildQuads() {
  rp.assign(S + 1, {});
  for (int a = -1; a < S; ++a) {
    RowPair& r = rp[a + 1];
    const int pairs = COLS / 2;
    r.qstart.assign(pairs + 1, 0);
    r.sstart.assign(2 * COLS + 1, 0);
    for (int p = 0; p < pairs; ++p) {
      r.qstart[p] = int32_t(r.quads.size());
      for (int c = 0; c < C; ++c) {
        const float v00 = x(c, a, 2 * p - 1), v01 = x(c, a, 2 * p), v10 = x(c, a + 1, 2 * p - 1),
                    v11 = x(c, a + 1, 2 * p);
        if (v00 != 0.f && v01 != 0.f && v10 != 0.f && v11 != 0.f)
          r.quads.push_back({{v00, v01, v10, v11}, c * 9 * kBlock, 0});
      }
    }
    r.qstart[pairs] = int32_t(r.quads.size());
    for (int rr = 0; rr < 2; ++rr) {
      for (int q = 0; q < COLS; ++q) {
        r.sstart[rr * COLS + q] = int32_t(r.singles.size());
        const int ix = q - 1, p = q / 2;
        for (int c = 0; c < C; ++c) {
          const float v = x(c, a + rr, ix);
          if (v == 0.f) continue;
          const bool quad = x(c, a, 2 * p - 1) != 0.f && x(c, a, 2 * p) != 0.f && x(c, a + 1, 2 * p - 1) != 0.f &&
                            x(c, a + 1, 2 * p) != 0.f;
          if (!quad) r.singles.push_back({v, c * 9 * kBlock});
        }
      }
    }
    r.sstart[2 * COLS] = int32_t(r.singles.size());
  }
}

// Two output rows (oy, oy + 1) x T positions from col0 (even) x 2 vectors.
template <int T>
__attribute__((noinline)) void QuadTile(int oy, int col0, float* out0, float* out1) {
  V acc[2][T][2];
  for (int r = 0; r < 2; ++r)
    for (int j = 0; j < T; ++j) acc[r][j][0] = acc[r][j][1] = _mm512_setzero_ps();
  for (int ky = 0; ky < 3; ++ky) {
    const RowPair& r = rp[oy - 1 + ky + 1];  // rows (oy - 1 + ky, oy + ky)
    const float* wk = W + ky * 3 * kBlock;
    auto pair = [&](auto pp) {
      constexpr int i = 2 * decltype(pp)::value;  // window column of the pair's first
      const int p = (col0 + i) / 2;
      for (const Quad *e = r.quads.data() + r.qstart[p], *end = r.quads.data() + r.qstart[p + 1]; e != end; ++e) {
        const V x00 = _mm512_set1_ps(e->v[0]), x01 = _mm512_set1_ps(e->v[1]), x10 = _mm512_set1_ps(e->v[2]),
                x11 = _mm512_set1_ps(e->v[3]);
        const float* w = wk + e->off;
        auto tap = [&](auto kk) {
          constexpr int k = decltype(kk)::value, j0 = i - k, j1 = i + 1 - k;
          constexpr bool u0 = j0 >= 0 && j0 < T, u1 = j1 >= 0 && j1 < T;
          if constexpr (u0 || u1) {
            for (int v = 0; v < 2; ++v) {
              V wv = _mm512_load_ps(w + k * kBlock + 16 * v);
              asm("" : "+v"(wv));
              if constexpr (u0) {
                acc[0][j0][v] = _mm512_fmadd_ps(x00, wv, acc[0][j0][v]);
                acc[1][j0][v] = _mm512_fmadd_ps(x10, wv, acc[1][j0][v]);
              }
              if constexpr (u1) {
                acc[0][j1][v] = _mm512_fmadd_ps(x01, wv, acc[0][j1][v]);
                acc[1][j1][v] = _mm512_fmadd_ps(x11, wv, acc[1][j1][v]);
              }
            }
          }
        };
        Unroll<0, 3>::Run(tap);
      }
      auto singles = [&](auto rr, auto ii) {
        constexpr int row = decltype(rr)::value, c = decltype(ii)::value;
        const int q = col0 + c;
        for (const Entry *e = r.singles.data() + r.sstart[row * COLS + q],
                         *end = r.singles.data() + r.sstart[row * COLS + q + 1];
             e != end; ++e) {
          const V xv = _mm512_set1_ps(e->v);
          const float* w = wk + e->w_off;
          auto tap = [&](auto kk) {
            constexpr int k = decltype(kk)::value, j = c - k;
            if constexpr (j >= 0 && j < T) {
              acc[row][j][0] = _mm512_fmadd_ps(xv, _mm512_load_ps(w + k * kBlock), acc[row][j][0]);
              acc[row][j][1] = _mm512_fmadd_ps(xv, _mm512_load_ps(w + k * kBlock + 16), acc[row][j][1]);
            }
          };
          Unroll<0, 3>::Run(tap);
        }
      };
      singles(Int<0>{}, Int<i>{});
      singles(Int<0>{}, Int<i + 1>{});
      singles(Int<1>{}, Int<i>{});
      singles(Int<1>{}, Int<i + 1>{});
    };
    Unroll<0, T / 2 + 1>::Run(pair);
  }
  for (int j = 0; j < T; ++j)
    for (int v = 0; v < 2; ++v) {
      _mm512_storeu_ps(out0 + j * kBlock + 16 * v, acc[0][j][v]);
      _mm512_storeu_ps(out1 + j * kBlock + 16 * v, acc[1][j][v]);
    }
}

std::vector<float> outv;
double RunPaired() {
  constexpr int T = 14;
  std::vector<Row> rows(3);
  for (int oy = 0; oy < S; ++oy) {
    for (int ky = 0; ky < 3; ++ky) {
      const int iy = oy - 1 + ky;
      rows[ky] = iy < 0 || iy >= S ? Row{nullptr, nullptr, nullptr} : Row{pe[iy].data(), ps[iy].data(), pb[iy].data()};
    }
    for (int ox = 0; ox < S; ox += T) {
      Tile a{rows.data(), 3, 3, W, kBlock, ox, 1, 1, kBlock, outv.data() + (size_t(oy) * (S + 32) + ox) * kBlock,
             false};
      exprune::sparse_conv::Sweep3<2, T, true>(a);
    }
  }
  return 0;
}
double RunQuads() {
  constexpr int T = 6;
  for (int oy = 0; oy < S; oy += 2) {
    for (int ox = 0; ox < S; ox += T) {
      QuadTile<T>(oy, ox, outv.data() + (size_t(oy) * (S + 32) + ox) * kBlock,
                  outv.data() + (size_t(oy + 1) * (S + 32) + ox) * kBlock);
    }
  }
  return 0;
}

double Check() {
  double worst = 0;
  for (int oy = 0; oy < S; oy += 7)
    for (int ox = 0; ox < S; ox += 5)
      for (int m = 0; m < kBlock; m += 7) {
        double r = 0;
        for (int c = 0; c < C; ++c)
          for (int t = 0; t < 9; ++t)
            r += double(x(c, oy - 1 + t / 3, ox - 1 + t % 3)) * W[(size_t(c) * 9 + t) * kBlock + m];
        worst = std::max(worst, std::fabs(r - outv[(size_t(oy) * (S + 32) + ox) * kBlock + m]) / (1 + std::fabs(r)));
      }
  return worst;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s C S ZEROS [iid | blocks DROP B]\n", argv[0]);
    return 2;
  }
  C = std::atoi(argv[1]);
  S = std::atoi(argv[2]);
  const double z = std::atof(argv[3]);
  const char* mode = argc > 4 ? argv[4] : "iid";
  const double drop = argc > 5 ? std::atof(argv[5]) : 0.0;
  const int B = argc > 6 ? std::atoi(argv[6]) : 2;
  COLS = S + 40;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.f, 1.f), sym(-1.f, 1.f);
  X.assign(size_t(C) * S * S, 0.f);
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < S; ++y)
      for (int xx = 0; xx < S; ++xx) X[(size_t(c) * S + y) * S + xx] = u(rng) + 0.01f;
  if (std::strcmp(mode, "iid") == 0) {
    for (float& v : X)
      if (u(rng) < z) v = 0.f;
  } else {  // B x B blocks zero with probability zb, then each non-zero dropped with `drop`
    const double zb = 1.0 - (1.0 - z) / (1.0 - drop);
    for (int c = 0; c < C; ++c)
      for (int by = 0; by < S; by += B)
        for (int bx = 0; bx < S + 1; bx += B) {
          const bool zero = u(rng) < zb;
          for (int dy = 0; dy < B; ++dy)
            for (int dx = 0; dx < B; ++dx) {
              const int y = by + dy, xx = bx + dx;  // blocks start at odd input columns, as the op's pairs
              const int xs = xx - 1;
              if (y >= S || xs < 0 || xs >= S) continue;
              if (zero || u(rng) < drop) X[(size_t(c) * S + y) * S + xs] = 0.f;
            }
        }
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < S; ++y)
        if (u(rng) < zb) X[(size_t(c) * S + y) * S + S - 1] = 0.f;
  }
  size_t nz = 0;
  for (float v : X) nz += v != 0.f;
  // 64-byte aligned, as the op's blocked weights: a vector load never straddles two lines.
  W_.assign(size_t(C) * 9 * kBlock + 16, 0.f);
  W = W_.data() + (16 - reinterpret_cast<uintptr_t>(W_.data()) / sizeof(float) % 16) % 16;
  for (size_t k = 0; k < size_t(C) * 9 * kBlock; ++k) W[k] = sym(rng);
  BuildPaired();
  BuildQuads();
  size_t quads = 0;
  for (auto& r : rp) quads += r.quads.size();
  outv.assign(size_t(S + 2) * (S + 32) * kBlock, 0.f);
  std::printf("C=%d S=%d %s zeros %.3f (drop %.2f): quads hold %.2f of non-zeros (rows counted twice)\n", C, S, mode,
              1.0 - double(nz) / X.size(), drop, 4.0 * quads / (2.0 * nz));
  auto time = [&](double (*f)()) {
    double best = 1e9;
    for (int rep = 0; rep < 15; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      f();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  double tp = 1e9, tq = 1e9, ep, eq;
  for (int round = 0; round < 3; ++round) {
    tp = std::min(tp, time(RunPaired));
    ep = Check();
    tq = std::min(tq, time(RunQuads));
    eq = Check();
  }
  std::printf(
      "  paired lists (op's Sweep3, 14 positions): %.3f ms  err %.1e\n  2x2 quads (2 rows x 6 positions):         %.3f "
      "ms  err %.1e  speedup %.2f\n",
      tp * 1e3, ep, tq * 1e3, eq, tp / tq);
}
