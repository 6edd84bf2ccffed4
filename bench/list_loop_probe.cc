// Probe for issue 16 (kernel speed): what paces the inner loops of ExPruneSparseConv's
// 3x3 list tile (Sweep3, sparse_conv_tile_impl.h) on this CPU, on synthetic lists laid
// out as the op's (per input column, its non-zero channels in order, each entry a value
// and a weight offset). Not part of the package build; a single-threaded standalone
// program (AVX-512 machines):
//
//   g++ -O3 -march=native -std=c++17 bench/list_loop_probe.cc -o /tmp/list_loop_probe
//   taskset -c 1 /tmp/list_loop_probe [NONZERO_SHARE]
//
// Each line walks 16 column lists one after the other, column i feeding outputs i, i - 1
// and i - 2 of a 14-position tile (2 vectors of output channels each), as Sweep3 does:
//   single      per entry 3 taps x 2 weight vectors loaded, 6 multiply-adds (Sweep3's
//               loop over a column's unshared channels), 6 accumulator chains per step;
//   single x2   columns i and i + 3 walked side by side: the same work, 12 chains a step;
//   registers   single x2 with the weights held in registers: per entry its value is
//               broadcast from memory and its offset read (summed), every load but the
//               64-byte ones;
//   pair        per entry a channel non-zero in both columns of a pair: 6 weight vectors
//               loaded, 12 multiply-adds (Sweep3's shared loop; two of them chain on
//               each of 4 outputs per step);
//   pair x2     pairs p and p + 2 (disjoint outputs) walked side by side;
// over the weights of 16, 64, 128 and 256 input channels (18 to 288 KB: level 1 to 2),
// successive tiles taking kernel rows 0, 1, 2 in turn. First it prints how many 64-byte
// loads a second this core sustains from level 1 with nothing else to do.
// Each channel is listed with probability NONZERO_SHARE (in the pair loops: as non-zero
// in both columns). Prints billions of multiply-adds a second (vectors of 16); divide
// by the clock for a cycle's worth.
// GCC 12's _mm512_reduce_add_ps trips a false -Wuninitialized (as in the op's files).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

namespace {

struct Entry {
  float v;
  int32_t w_off;
};

constexpr int kT = 14, kCols = kT + 2, kTap = 32, kChanFloats = 9 * kTap;
using Acc = __m512[kT][2];

float* weights = nullptr;

// The taps of column I's input e: outputs I - kx for kx = 0..2 that are in the tile.
// `offsets` sums the offsets the registers variant reads but has no use for.
template <int I, bool Registers>
inline __attribute__((always_inline)) void Single(Acc& acc, const Entry* e, const __m512 (&wr)[6], int64_t& offsets) {
  const float* w = weights + e->w_off;
  if (Registers) offsets += e->w_off;
  const __m512 x = _mm512_set1_ps(e->v);
  for (int kx = 0; kx < 3; ++kx) {
    if (I - kx < 0 || I - kx >= kT) continue;
    for (int v = 0; v < 2; ++v) {
      const __m512 wv = Registers ? wr[kx * 2 + v] : _mm512_load_ps(w + kx * kTap + v * 16);
      acc[I - kx][v] = _mm512_fmadd_ps(x, wv, acc[I - kx][v]);
    }
  }
}

// A channel non-zero in columns I and I + 1: each weight vector serves both.
template <int I>
inline __attribute__((always_inline)) void Pair(Acc& acc, const Entry* e) {
  const float* w = weights + e[0].w_off;
  const __m512 x0 = _mm512_set1_ps(e[0].v), x1 = _mm512_set1_ps(e[1].v);
  for (int kx = 0; kx < 3; ++kx) {
    for (int v = 0; v < 2; ++v) {
      __m512 wv = _mm512_load_ps(w + kx * kTap + v * 16);
      asm("" : "+v"(wv));  // one load for both multiply-adds, as the op's Pin
      if (I - kx >= 0 && I - kx < kT) acc[I - kx][v] = _mm512_fmadd_ps(x0, wv, acc[I - kx][v]);
      if (I + 1 - kx >= 0 && I + 1 - kx < kT) acc[I + 1 - kx][v] = _mm512_fmadd_ps(x1, wv, acc[I + 1 - kx][v]);
    }
  }
}

enum class Kind { kRegisters, kSingle, kSingle2, kPair, kPair2 };

template <Kind K, int I>
inline __attribute__((always_inline)) void Column(Acc& acc, const Entry* es, const int32_t* st, const __m512 (&wr)[6],
                                                  int64_t& offsets) {
  if constexpr (I < kCols) {
    if constexpr (K == Kind::kPair2) {
      if constexpr (I % 8 < 4 && I % 2 == 0) {  // pairs at I and I + 4 side by side: disjoint outputs
        const Entry *e0 = es + st[I], *end0 = es + st[I + 1];
        const Entry *e1 = es + st[I + 4], *end1 = es + st[I + 5];
        for (; e0 + 1 < end0 && e1 + 1 < end1; e0 += 2, e1 += 2) {
          Pair<I>(acc, e0);
          Pair<I + 4>(acc, e1);
        }
        for (; e0 + 1 < end0; e0 += 2) Pair<I>(acc, e0);
        for (; e1 + 1 < end1; e1 += 2) Pair<I + 4>(acc, e1);
      }
    } else if constexpr (K == Kind::kPair) {
      if constexpr (I % 2 == 0) {
        for (const Entry* e = es + st[I]; e + 1 < es + st[I + 1]; e += 2) Pair<I>(acc, e);
      }
    } else if constexpr (K == Kind::kSingle2 || K == Kind::kRegisters) {
      constexpr bool kRegs = K == Kind::kRegisters;
      if constexpr (I % 6 < 3) {  // columns I and I + 3 side by side: disjoint outputs
        const Entry *e0 = es + st[I], *end0 = es + st[I + 1];
        if constexpr (I + 3 < kCols) {
          const Entry *e1 = es + st[I + 3], *end1 = es + st[I + 4];
          for (; e0 != end0 && e1 != end1; ++e0, ++e1) {
            Single<I, kRegs>(acc, e0, wr, offsets);
            Single<I + 3, kRegs>(acc, e1, wr, offsets);
          }
          for (; e1 != end1; ++e1) Single<I + 3, kRegs>(acc, e1, wr, offsets);
        }
        for (; e0 != end0; ++e0) Single<I, kRegs>(acc, e0, wr, offsets);
      }
    } else {
      for (const Entry* e = es + st[I]; e != es + st[I + 1]; ++e) Single<I, false>(acc, e, wr, offsets);
    }
    Column<K, I + 1>(acc, es, st, wr, offsets);
  }
}

// Returns a sum of the results, printed so that nothing is optimised away.
template <Kind K>
__attribute__((noinline)) float Run(const std::vector<Entry>& es, const std::vector<int32_t>& st, int reps) {
  Acc acc;
  for (auto& a : acc) a[0] = a[1] = _mm512_setzero_ps();
  __m512 wr[6];
  for (int i = 0; i < 6; ++i) wr[i] = _mm512_set1_ps(1e-7f * (i + 1));
  const int tiles = static_cast<int>(st.size() / (kCols + 1));
  int64_t offsets = 0;
  for (int r = 0; r < reps; ++r) {
    for (int t = 0; t < tiles; ++t) Column<K, 0>(acc, es.data(), st.data() + t * (kCols + 1), wr, offsets);
  }
  __m512 s = _mm512_setzero_ps();
  for (auto& a : acc) s = _mm512_add_ps(s, _mm512_add_ps(a[0], a[1]));
  return _mm512_reduce_add_ps(s) + static_cast<float>(offsets & 1);
}

// Outputs of the tile that column i's input reaches (taps kx with i - kx in [0, kT)).
int Reach(int i) {
  int n = 0;
  for (int kx = 0; kx < 3; ++kx) n += i - kx >= 0 && i - kx < kT;
  return n;
}

// Multiply-adds of one pass over the lists: 2 vectors per output an entry reaches. In
// pair lists, even columns hold a channel's two entries (columns i and i + 1) side by
// side and odd columns are not walked.
double Work(const std::vector<int32_t>& st, bool pairs) {
  double n = 0;
  for (size_t t = 0; t + kCols < st.size(); t += kCols + 1) {
    for (int i = 0; i < kCols; ++i) {
      const double entries = st[t + i + 1] - st[t + i];
      if (!pairs) n += entries * Reach(i) * 2;
      if (pairs && i % 2 == 0) n += entries / 2 * (Reach(i) + Reach(i + 1)) * 2;
    }
  }
  return n;
}

template <Kind K>
void Report(const char* name, int channels, double share) {
  std::mt19937 rng(5);
  std::bernoulli_distribution keep(share);
  std::vector<Entry> es;
  std::vector<int32_t> st;
  const int tiles = 24;  // tiles' lists laid out one after another, as a row's
  for (int t = 0; t < tiles; ++t) {
    for (int i = 0; i < kCols; ++i) {
      st.push_back(static_cast<int32_t>(es.size()));
      if ((K == Kind::kPair || K == Kind::kPair2) && i % 2 == 1) continue;  // not walked
      for (int c = 0; c < channels; ++c) {
        // pairs: the channel listed with probability `share`, an entry per column
        if (keep(rng)) {
          // tile t's lists as those of kernel row t % 3: all 9 taps of a channel in use
          const int32_t off = c * kChanFloats + (t % 3) * 3 * kTap;
          es.push_back({0.5f, off});
          if (K == Kind::kPair || K == Kind::kPair2) es.push_back({0.25f, off});
        }
      }
    }
    st.push_back(static_cast<int32_t>(es.size()));
  }
  const int reps = static_cast<int>(4e8 / (Work(st, false) + 1) + 1);
  double best = 1e30;
  float sink = 0;
  for (int k = 0; k < 5; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    sink += Run<K>(es, st, reps);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = s < best ? s : best;
  }
  const double fmas = Work(st, K == Kind::kPair || K == Kind::kPair2) * reps;
  std::printf("  %-10s %4d channels (%3d KB): %.2f G multiply-adds/s  (%g)\n", name, channels,
              channels * kChanFloats * 4 / 1024, fmas / best / 1e9, sink);
}

// 64-byte loads alone: 8 independent streams over 8 KB, each load OR-ed into a register.
void LoadRate() {
  const int64_t steps = 100000000;
  __m512 a[8];
  for (__m512& v : a) v = _mm512_setzero_ps();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    const float* p = weights + ((s * 128) & 2047);
    for (int i = 0; i < 8; ++i) a[i] = _mm512_or_ps(a[i], _mm512_load_ps(p + 16 * i));
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  __m512 o = a[0];
  for (int i = 1; i < 8; ++i) o = _mm512_or_ps(o, a[i]);
  std::printf("64-byte loads alone: %.2f G/s  (%g)\n", steps * 8 / sec / 1e9, _mm512_reduce_add_ps(o));
}

}  // namespace

int main(int argc, char** argv) {
  const double share = argc > 1 ? std::atof(argv[1]) : 0.5;
  if (!(share > 0.0 && share <= 1.0)) {
    std::fprintf(stderr, "NONZERO_SHARE must be in (0, 1], got %s\n", argv[1]);
    return 2;
  }
  weights = static_cast<float*>(::operator new(256 * kChanFloats * sizeof(float), std::align_val_t{64}));
  for (int i = 0; i < 256 * kChanFloats; ++i) weights[i] = 1e-7f;
  LoadRate();
  std::printf("list loops, each channel non-zero with probability %.2f, 1 thread\n", share);
  for (const int channels : {16, 64, 128, 256}) {
    Report<Kind::kSingle>("single", channels, share);
    Report<Kind::kSingle2>("single x2", channels, share);
    Report<Kind::kRegisters>("registers", channels, share);
    Report<Kind::kPair>("pair", channels, share);
    Report<Kind::kPair2>("pair x2", channels, share);
  }
  ::operator delete(weights, std::align_val_t{64});
  return 0;
}
