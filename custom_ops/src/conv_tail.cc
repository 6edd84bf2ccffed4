// Picks the kernel set of conv_tail.h for this CPU, once.
#include "conv_tail.h"

#include <cstdlib>
#include <cstring>

namespace exprune {
namespace conv_tail {

// Defined in conv_tail_avx512.cc / conv_tail_avx2.cc: null when the build left the
// instruction set out.
const Kernels* Avx512Table();
const Kernels* Avx2Table();

namespace {

bool CpuHas(const char* isa) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx512") == 0) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma");
  }
  if (std::strcmp(isa, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  (void)isa;
#endif
  return false;
}

const Kernels& Choose() {
  const char* forced = std::getenv("EXPRUNE_CONV_KERNELS");
  // amx (sparse_conv_amx.h) forces the tile path, beside the AVX-512 set it needs.
  if (forced != nullptr && std::strcmp(forced, "amx") == 0) forced = "avx512";
  const bool any = forced == nullptr || *forced == '\0';
  auto wanted = [&](const char* name) { return any || std::strcmp(forced, name) == 0; };
  if (wanted("avx512")) {
    if (const Kernels* k = Avx512(); k != nullptr) return *k;
  }
  if (wanted("avx512") || wanted("avx2")) {
    if (const Kernels* k = Avx2(); k != nullptr) return *k;
  }
  return Generic();
}

}  // namespace

const Kernels* Avx512() { return CpuHas("avx512") ? Avx512Table() : nullptr; }
const Kernels* Avx2() { return CpuHas("avx2") ? Avx2Table() : nullptr; }

const Kernels& Select() {
  static const Kernels& chosen = Choose();
  return chosen;
}

}  // namespace conv_tail
}  // namespace exprune
