// Probe for issue 16 (kernel speed): how many AVX-512 multiply-adds a cycle this CPU
// sustains when some of their operands are loaded from cache, by loads per
// multiply-add. Not part of the package build; a standalone single-threaded program:
//
//   g++ -O3 -march=native -std=c++17 bench/fma_load_probe.cc -o /tmp/fma_load_probe && /tmp/fma_load_probe
//
// Each step runs 12 independent multiply-adds (12 accumulators: enough to hide the
// latency); L of their 12 weight vectors are loaded, from 4 KB of weights (always in the
// level-1 cache) or from 32 KB (about the op's per-kernel-row share: partly level 2);
// the rest reuse a register. ExPruneSparseConv's 3x3 tile loads a weight vector per
// multiply-add (L = 12) unless a channel is non-zero in both columns of a pair, where
// one load serves two (sparse_conv_tile.h). Prints billions of multiply-adds a second;
// divide by the clock to get them per cycle.
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <initializer_list>

namespace {

// Steps start at 64-byte aligned offsets below the span and read up to 12 vectors past.
constexpr int64_t kMaxSpan = 8192;
alignas(64) float weights[kMaxSpan + 12 * 16];

template <int L>
__attribute__((noinline)) float Run(int64_t steps, int64_t span, float x_value) {
  __m512 acc[12];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  const __m512 x = _mm512_set1_ps(x_value);
  const __m512 kept = _mm512_set1_ps(1e-9f);
  for (int64_t s = 0; s < steps; ++s) {
    const float* w = weights + ((s * 192) & (span - 1) & ~15);
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(x, i < L ? _mm512_load_ps(w + 16 * i) : kept, acc[i]);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < 12; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_reduce_add_ps(sum);  // printed, so that nothing is optimised away
}

template <int L>
void Report(int64_t steps, int64_t span) {
  const auto t0 = std::chrono::steady_clock::now();
  const float result = Run<L>(steps, span, 1e-9f);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("weights over %3lld KB, loads per multiply-add %.2f: %.2f G multiply-adds/s  (%g)\n",
              static_cast<long long>(span * 4 / 1024), L / 12.0, steps * 12 / s / 1e9, result);
}

}  // namespace

int main() {
  for (float& w : weights) w = 1e-9f;
  const int64_t steps = 100000000;
  for (const int64_t span : {int64_t{1024}, kMaxSpan}) {  // 4 KB; 32 KB, a level-1 cache here
    Report<0>(steps, span);
    Report<6>(steps, span);
    Report<8>(steps, span);
    Report<9>(steps, span);
    Report<10>(steps, span);
    Report<12>(steps, span);
  }
  return 0;
}
