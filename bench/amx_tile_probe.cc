// What paces the tile path of ExPruneSparseConv (custom_ops/src/sparse_conv_amx_kernel.cc)
// on a CPU with AMX-BF16: nanoseconds per TDPBF16PS (16 x 16 float32 sums += 16 x 32 by
// 32 x 16 bfloat16: 8192 multiply-adds) alone, with the kernel's tile loads (18 loads of
// 1 KB per 24 products) from level 1, and with those loads 16 bytes off a cache line, as
// the first version's planes were (each 64-byte tile row then straddles two lines).
//
//   g++ -O2 -mamx-tile -mamx-bf16 -I custom_ops/src bench/amx_tile_probe.cc -o /tmp/amx_tile_probe
//   taskset -c 1 /tmp/amx_tile_probe
//
// Linux only (the tile state is asked for with arch_prctl). Not part of the library.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "sparse_conv_amx_kernel.h"  // TileConfig, as the op loads it

namespace {

alignas(64) uint16_t buffer[8 * 512 + 64];

// Six products of two position tiles by two output halves, as the kernel orders them:
// weight parts outermost, each weight pair loaded once, the input pair once per product.
inline void Step(const uint16_t* a, const uint16_t* b) {
  for (int wpart = 0; wpart < 3; ++wpart) {
    _tile_loadd(6, b + wpart * 512, 64);
    _tile_loadd(7, b + (3 + wpart) * 512, 64);
    for (int xpart = 0; xpart < 3 - wpart; ++xpart) {
      _tile_loadd(4, a, 64);
      _tile_loadd(5, a + 512, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
}

double NsPerProduct(const uint16_t* a, const uint16_t* b, bool loads) {
  constexpr long kSteps = 1000000;
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < kSteps; ++i) {
    if (loads) {
      Step(a, b);
    } else {
      for (int k = 0; k < 6; ++k) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return s / (kSteps * 24.0) * 1e9;
}

}  // namespace

int main() {
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) != 0) {
    std::puts("the OS gives this process no tile state");
    return 1;
  }
  static const exprune::sparse_conv_amx::TileConfig config;
  _tile_loadconfig(&config);
  for (uint16_t& v : buffer) v = 0x3f80;  // 1.0
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, buffer, 64);
  _tile_loadd(5, buffer, 64);
  _tile_loadd(6, buffer, 64);
  _tile_loadd(7, buffer, 64);
  const double alone = NsPerProduct(buffer, buffer, false);
  const double aligned = NsPerProduct(buffer, buffer + 2 * 512, true);
  const double off = NsPerProduct(buffer + 8, buffer + 2 * 512 + 8, true);
  std::printf("ns per TDPBF16PS: alone %.2f, with the kernel's loads %.2f, loads 16 bytes off a line %.2f\n", alone,
              aligned, off);
  std::printf("G bfloat16 multiply-adds/s alone: %.0f\n", 8192 / alone);
  _tile_release();
  return 0;
}
