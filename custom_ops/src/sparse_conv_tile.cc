// Picks the kernel set of sparse_conv_tile.h: the instruction set conv_tail.h chose,
// so that one environment variable forces both families in tests and benchmarks.
#include "sparse_conv_tile.h"

#include <cstring>

#include "conv_tail.h"

namespace exprune {
namespace sparse_conv {

namespace {

const Kernels& Choose() {
  const char* isa = conv_tail::Select().name;
  const Kernels* k = nullptr;
  if (std::strcmp(isa, "avx512") == 0) k = Avx512Table();
  if (std::strcmp(isa, "avx2") == 0) k = Avx2Table();
  return k != nullptr ? *k : Generic();
}

}  // namespace

const Kernels& Select() {
  static const Kernels& chosen = Choose();
  return chosen;
}

}  // namespace sparse_conv
}  // namespace exprune
