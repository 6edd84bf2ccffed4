// Probe for issue 16 (the sparse conv's weight fetch, docs/sparse_conv.md "The
// lists on the Xeon, revisited"): how fast one core reads data that is not in
// its level-2 cache (a 512 -> 512 3x3 layer's 9.4 MB of weights), on demand and
// with software prefetches. Not part of the package build; a standalone
// single-threaded program:
//
//   g++ -O2 -mavx512f -std=c++17 bench/read_bandwidth_probe.cc -o /tmp/read_bw
//   && /tmp/read_bw [BYTES]
//
// Eight copies are read in turn, so that each pass finds its copy out of
// level 2. Prints the best of 20 passes per way of reading. "prefetch all, then
// read" fetches the whole copy before reading it (more than level 2 holds, so
// the early lines are gone again); "read, prefetch 4 KB ahead" is a stream the
// line-fill buffers keep busy.
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

float Read(const float *p, size_t n, size_t ahead) {
  __m512 s = _mm512_setzero_ps();
  for (size_t j = 0; j < n; j += 16) {
    if (ahead != 0)
      _mm_prefetch(reinterpret_cast<const char *>(p + j + ahead), _MM_HINT_T1);
    s = _mm512_add_ps(s, _mm512_load_ps(p + j));
  }
  return _mm512_reduce_add_ps(s);
}

void PrefetchAll(const float *p, size_t n) {
  for (size_t j = 0; j < n; j += 16)
    _mm_prefetch(reinterpret_cast<const char *>(p + j), _MM_HINT_T1);
}

} // namespace

int main(int argc, char **argv) {
  const size_t bytes =
      argc > 1 ? std::strtoull(argv[1], nullptr, 10) : size_t{9437184};
  const size_t n = bytes / 4 / 16 * 16,
               room = n + 1024; // room: the prefetches ahead stay inside
  std::vector<float *> copies;
  for (int i = 0; i < 8; ++i) {
    auto *p = static_cast<float *>(std::aligned_alloc(64, room * 4));
    for (size_t j = 0; j < room; ++j)
      p[j] = static_cast<float>(j % 7);
    copies.push_back(p);
  }
  volatile float sink = 0;
  const char *names[] = {"read on demand", "prefetch all, then read",
                         "read, prefetch 4 KB ahead"};
  for (int way = 0; way < 3; ++way) {
    double best = 1e9;
    for (int pass = 0; pass < 20; ++pass) {
      const float *p = copies[pass % copies.size()];
      const auto t0 = std::chrono::steady_clock::now();
      if (way == 1)
        PrefetchAll(p, n);
      sink = sink + Read(p, n, way == 2 ? 1024 : 0);
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
              .count();
      best = s < best ? s : best;
    }
    std::printf("%-28s %.3f ms  %.1f GB/s\n", names[way], best * 1e3,
                n * 4 / best / 1e9);
  }
  for (float *p : copies)
    std::free(p);
  return 0;
}
