#include "sparse_conv_amx.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "scratch.h"
#include "sparse_conv_tile.h"

#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace exprune {
namespace sparse_conv_amx {
namespace {

// The tile path runs an image whose sampled non-zero share is at least kMinShare with
// up to kFewChannels input channels, kShareStep more per doubling past that; sparser
// ones are listed. The tiles' time hardly depends on the zeros; the lists' grows with the
// channels, whose weights a chunk holds. Side by side on the bench layers (this Xeon,
// docs/sparse_conv.md "The tile path"), the two broke even at about 80% zeros with 64
// channels, 75-78% with 128, 70-72% with 256 and 65-68% with 512.
constexpr double kMinShare = 0.21;
constexpr double kShareStep = 0.04;
constexpr int64_t kFewChannels = 64;
// Compute tasks: a block of outputs over a band of positions, as few bands as leave
// kMinTasks tasks (enough to share out over a few threads), so that a block's weights
// are read once per band. (Against bands of one pair of position tiles, as many tasks as
// work alone would give: within 0.02 of onnxruntime's time on the five bench layers.)
constexpr int64_t kMinTasks = 16;
// Packed rows per task of the pass that splits the input.
constexpr int64_t kPackRows = 16;

// Linux keeps the tile registers off until a process asks for them.
bool OsAllowsTiles() {
#if defined(__linux__) && defined(__x86_64__) && defined(SYS_arch_prctl)
  constexpr long kReqXcompPerm = 0x1023;  // ARCH_REQ_XCOMP_PERM
  constexpr long kXtileData = 18;         // XFEATURE_XTILEDATA
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
#else
  return false;
#endif
}

bool CpuHasTiles() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(0));
  if (eax < 7) return false;
  __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
  const bool amx_bf16 = (edx >> 22) & 1u, amx_tile = (edx >> 24) & 1u;
  return amx_bf16 && amx_tile && std::strcmp(sparse_conv::Select().name, "avx512") == 0;
#else
  return false;
#endif
}

const Kernels* Choose() {
  const char* forced = std::getenv("EXPRUNE_CONV_KERNELS");
  if (forced != nullptr && *forced != '\0' && std::strcmp(forced, "amx") != 0) return nullptr;
  const Kernels* k = KernelTable();
  return k != nullptr && CpuHasTiles() && OsAllowsTiles() ? k : nullptr;
}

// The top 16 bits of a float, and the float they stand for.
uint16_t Top(float v) {
  uint32_t bits = 0;
  std::memcpy(&bits, &v, 4);
  return static_cast<uint16_t>(bits >> 16);
}
float FromTop(uint16_t t) {
  const uint32_t bits = uint32_t{t} << 16;
  float v = 0.0f;
  std::memcpy(&v, &bits, 4);
  return v;
}

// Grow-only, line-aligned storage kept between calls (scratch.h), as the list path keeps
// its lists.
struct PlanesScratch {
  AlignedVector<uint16_t> buf;
  uint16_t* Get(size_t n) {
    if (buf.size() < n) {
      buf.clear();
      buf.shrink_to_fit();
      buf.resize(n);
    }
    return buf.data();
  }
};

// Whether the input rows and columns past the packed planes (a stride can leave the
// last ones unread) hold no Inf or NaN: an image that holds one is listed, whether the
// convolution reads it or not, as docs/custom_ops.md says.
bool UnreadFinite(const float* x, int64_t channels, int64_t h, int64_t w, int64_t rows, int64_t cols) {
  if (rows >= h && cols >= w) return true;
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t iy = 0; iy < h; ++iy) {
      const float* row = x + (c * h + iy) * w;
      for (int64_t ix = iy < rows ? std::max<int64_t>(cols, 0) : 0; ix < w; ++ix) {
        if (!std::isfinite(row[ix])) return false;
      }
    }
  }
  return true;
}

}  // namespace

const Kernels* Usable() {
  static const Kernels* chosen = Choose();
  return chosen;
}

bool Forced() {
  static const bool forced = [] {
    const char* name = std::getenv("EXPRUNE_CONV_KERNELS");
    return name != nullptr && std::strcmp(name, "amx") == 0;
  }();
  return forced;
}

bool Wanted(double share, int64_t channels) {
  const double doublings = std::log2(static_cast<double>(std::max(channels, kFewChannels)) / kFewChannels);
  return Forced() || share >= kMinShare + kShareStep * doublings;
}

void PackWeights(const float* w, int64_t channels, int64_t kh, int64_t kw, int64_t outputs, Weights* out) {
  out->data.clear();
  if (Usable() == nullptr) return;
  const int64_t count = channels * kh * kw * outputs;
  const auto splittable = [](float v) { return std::isfinite(v) && (v == 0.0f || std::fabs(v) >= kSmallest); };
  if (!std::all_of(w, w + count, splittable)) return;
  const int64_t nkc = CeilDiv(channels, kChannels), blocks = CeilDiv(outputs, kOutputs);
  out->data.assign(static_cast<size_t>(blocks * kh * kw * nkc * 6 * kTileElems), 0);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t ky = 0; ky < kh; ++ky) {
      for (int64_t kx = 0; kx < kw; ++kx) {
        for (int64_t kc = 0; kc < nkc; ++kc) {
          uint16_t* tiles = out->data.data() + (((b * kh + ky) * kw + kx) * nkc + kc) * 6 * kTileElems;
          for (int64_t m = 0; m < kOutputs && b * kOutputs + m < outputs; ++m) {
            for (int64_t i = 0; i < kChannels && kc * kChannels + i < channels; ++i) {
              const int64_t c = kc * kChannels + i, o = b * kOutputs + m;
              float rest = w[((c * kh + ky) * kw + kx) * outputs + o];
              uint16_t* tile = tiles + (m / 16) * 3 * kTileElems + (i / 2) * 32 + (m % 16) * 2 + i % 2;
              for (int part = 0; part < 3; ++part) {
                tile[part * kTileElems] = Top(rest);
                rest -= FromTop(Top(rest));
              }
            }
          }
        }
      }
    }
  }
}

bool RunImage(const Ort::KernelContext& ctx, const sparse_conv::Layer& l, const Weights& w, int64_t n) {
  const Kernels& k = *Usable();
  const int64_t tiles_x = CeilDiv(l.w.out, kPositions);
  Planes p{nullptr, CeilDiv(l.channels, kChannels), (l.h.out - 1) * l.h.stride + (l.h.kernel - 1) * l.h.dilation + 1,
           (tiles_x * kPositions - 1) * l.w.stride + (l.w.kernel - 1) * l.w.dilation + 1};
  const scratch::Pool<PlanesScratch>::Lease planes = scratch::Pool<PlanesScratch>::Take();
  p.data = planes->Get(static_cast<size_t>(3 * p.part()));

  // ---- split the input into its three planes: tasks of kPackRows padded rows
  const int64_t rows = p.nkc * p.hp, pack_tasks = CeilDiv(rows, kPackRows);
  std::vector<char> finite(static_cast<size_t>(pack_tasks), 1);
  const float* x = l.x + n * l.channels * l.h.in * l.w.in;
  auto pack = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task);
    for (int64_t r = t * kPackRows; r < std::min(rows, (t + 1) * kPackRows); ++r) {
      if (!k.pack_row(PackIn{x, l.channels, l.h.in, l.w.in, l.h.pad, l.w.pad, p, r / p.hp, r % p.hp})) {
        finite[static_cast<size_t>(task)] = 0;
      }
    }
  };
  ParallelTasks(ctx, static_cast<size_t>(pack_tasks), pack);
  if (std::find(finite.begin(), finite.end(), 0) != finite.end() ||
      !UnreadFinite(x, l.channels, l.h.in, l.w.in, p.hp - l.h.pad, p.wp - l.w.pad)) {
    return false;
  }

  // ---- the tiles: tasks of (block of kOutputs outputs, band of position-tile pairs)
  const int64_t blocks = CeilDiv(l.mg, kOutputs), pairs = CeilDiv(l.h.out * tiles_x, 2);
  const int64_t bands = std::clamp<int64_t>(CeilDiv(kMinTasks, blocks), 1, pairs);
  const int64_t block_elems = l.h.kernel * l.w.kernel * p.nkc * 6 * kTileElems, plane = l.h.out * l.w.out;
  auto compute = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task), b = t / bands, band = t % bands;
    const int64_t m0 = b * kOutputs, lanes = std::min(kOutputs, l.mg - m0);
    alignas(64) float sums[2 * kPositions * kOutputs];
    BlockIn in{
        p,   w.data.data() + b * block_elems, l.h.kernel, l.w.kernel, l.w.stride, l.h.dilation, l.w.dilation, {0, 0},
        sums};
    k.begin();
    for (int64_t pair = band * pairs / bands; pair < (band + 1) * pairs / bands; ++pair) {
      int64_t oy[2], ox[2];
      for (int i = 0; i < 2; ++i) {
        const int64_t tile = std::min(2 * pair + i, l.h.out * tiles_x - 1);  // an odd last tile runs twice
        oy[i] = tile / tiles_x;
        ox[i] = tile % tiles_x * kPositions;
        in.at[i] = (oy[i] * l.h.stride * p.wp + ox[i] * l.w.stride) * kChannels;
      }
      k.block(in);
      for (int i = 0; i < 2 && (i == 0 || oy[1] != oy[0] || ox[1] != ox[0]); ++i) {
        const int64_t at = (n * l.outs + m0) * plane + oy[i] * l.w.out + ox[i];
        sparse_conv::Select().finish(
            sparse_conv::Out{sums + i * kPositions * kOutputs, kOutputs, std::min(kPositions, l.w.out - ox[i]),
                             static_cast<int>(lanes), l.bias != nullptr ? l.bias + m0 : nullptr,
                             l.res != nullptr ? l.res + at : nullptr, l.y + at, plane, l.relu, l.clip_max});
      }
    }
    k.end();
  };
  ParallelTasks(ctx, static_cast<size_t>(blocks * bands), compute);
  return true;
}

}  // namespace sparse_conv_amx
}  // namespace exprune
