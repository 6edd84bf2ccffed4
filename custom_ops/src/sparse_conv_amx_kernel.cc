// The AMX stages of sparse_conv_amx_kernel.h. CMakeLists.txt builds this file alone with
// the AMX-BF16 and AVX-512 flags; without them it compiles to a null table.
#include "sparse_conv_amx_kernel.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512F__) && defined(__AVX512BW__)

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_ps() as the unused merge source,
// which trips -W(maybe-)uninitialized wherever they are inlined; it is a false alarm.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "transpose_avx512.h"

namespace exprune {
namespace sparse_conv_amx {
namespace {

void Begin() {
  static const TileConfig config;
  _tile_loadconfig(&config);
}

void End() { _tile_release(); }

// The top 16 bits of each float: the three parts are these of v, of v - hi and of what
// that leaves. Each subtraction is exact (the remainder has at most 16 significant bits).
inline void Split(__m512 v, __m256i* hi, __m256i* mid, __m256i* lo) {
  const __m512i top = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  const __m512i h = _mm512_and_si512(_mm512_castps_si512(v), top);
  const __m512 r = _mm512_sub_ps(v, _mm512_castsi512_ps(h));
  const __m512i m = _mm512_and_si512(_mm512_castps_si512(r), top);
  const __m512 r2 = _mm512_sub_ps(r, _mm512_castsi512_ps(m));
  *hi = _mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16));
  *mid = _mm512_cvtepi32_epi16(_mm512_srli_epi32(m, 16));
  *lo = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(r2), 16));
}

// Lanes the split cannot carry: Inf, NaN (exponent all ones) and non-zeros under
// kSmallest. (NaN compares false with everything, so the second test leaves it to the first.)
inline __mmask16 Unsplittable(__m512 v) {
  const __m512i exp = _mm512_set1_epi32(0x7F800000);
  const __m512 magnitude = _mm512_abs_ps(v);
  const __mmask16 tiny = _mm512_cmp_ps_mask(magnitude, _mm512_set1_ps(kSmallest), _CMP_LT_OQ) &
                         _mm512_cmp_ps_mask(magnitude, _mm512_setzero_ps(), _CMP_GT_OQ);
  return _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v), exp), exp) | tiny;
}

bool PackRow(const PackIn& a) {
  const Planes& p = a.planes;
  const int64_t part = p.part(), row_elems = p.wp * kChannels;
  uint16_t* dst[3];
  for (int k = 0; k < 3; ++k) dst[k] = p.data + k * part + (a.kc * p.hp + a.py) * row_elems;
  const int64_t iy = a.py - a.pad_t;
  if (iy < 0 || iy >= a.h) {
    for (uint16_t* d : dst) std::memset(d, 0, static_cast<size_t>(row_elems) * 2);
    return true;
  }
  // The columns the tiles read: a stride can leave the input's last ones unread, and the
  // packed row ends before them.
  const int64_t left = a.pad_l < p.wp ? a.pad_l : p.wp;
  const int64_t used = p.wp - left < a.w ? p.wp - left : a.w;
  for (uint16_t* d : dst) {
    std::memset(d, 0, static_cast<size_t>(left * kChannels) * 2);
    std::memset(d + (left + used) * kChannels, 0, static_cast<size_t>((p.wp - left - used) * kChannels) * 2);
  }
  __mmask16 bad = 0;
  const int64_t plane = a.h * a.w;
  for (int64_t half = 0; half < 2; ++half) {
    const int64_t c0 = a.kc * kChannels + half * 16;
    for (int64_t ix0 = 0; ix0 < used; ix0 += 16) {
      const int64_t count = used - ix0 < 16 ? used - ix0 : 16;
      const __mmask16 cols = static_cast<__mmask16>((1u << count) - 1u);
      __m512 r[16];
      for (int64_t c = 0; c < 16; ++c) {
        const bool inside = c0 + c < a.channels;
        r[c] = inside ? _mm512_maskz_loadu_ps(cols, a.x + (c0 + c) * plane + iy * a.w + ix0) : _mm512_setzero_ps();
        bad |= Unsplittable(r[c]);
      }
      avx512::Transpose16x16(r);
      for (int64_t j = 0; j < count; ++j) {
        __m256i parts[3];
        Split(r[j], &parts[0], &parts[1], &parts[2]);
        const int64_t at = (left + ix0 + j) * kChannels + half * 16;
        for (int k = 0; k < 3; ++k) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst[k] + at), parts[k]);
      }
    }
  }
  return bad == 0;
}

// Tiles 0-3 hold the sums (position tile i, output half j at 2i + j), 4-5 the inputs of
// the two position tiles, 6-7 the weights of the two output halves. For each tap and
// channel block, the six part products hi*hi, mid*hi, lo*hi, hi*mid, mid*mid, hi*lo
// (input * weight), weight parts outermost so that each weight tile is loaded once.
void Block(const BlockIn& b) {
  const Planes& p = b.planes;
  const int64_t part = p.part(), stride = b.stride_w * kChannels * 2;
  const uint16_t* x0 = p.data + b.at[0];
  const uint16_t* x1 = p.data + b.at[1];
  const uint16_t* w = b.w;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t ky = 0; ky < b.kh; ++ky) {
    for (int64_t kx = 0; kx < b.kw; ++kx) {
      for (int64_t kc = 0; kc < p.nkc; ++kc, w += 6 * kTileElems) {
        const int64_t off = ((kc * p.hp + ky * b.dil_h) * p.wp + kx * b.dil_w) * kChannels;
        const uint16_t* a0 = x0 + off;
        const uint16_t* a1 = x1 + off;
        const uint16_t* w1 = w + 3 * kTileElems;  // the second output half
        for (int wpart = 0; wpart < 3; ++wpart) {
          _tile_loadd(6, w + wpart * kTileElems, 64);
          _tile_loadd(7, w1 + wpart * kTileElems, 64);
          for (int xpart = 0; xpart < 3 - wpart; ++xpart) {
            _tile_loadd(4, a0 + xpart * part, stride);
            _tile_loadd(5, a1 + xpart * part, stride);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
          }
        }
      }
    }
  }
  _tile_stored(0, b.sums, kOutputs * 4);
  _tile_stored(1, b.sums + 16, kOutputs * 4);
  _tile_stored(2, b.sums + kPositions * kOutputs, kOutputs * 4);
  _tile_stored(3, b.sums + kPositions * kOutputs + 16, kOutputs * 4);
}

const Kernels kAmx = {PackRow, Begin, End, Block};

}  // namespace

const Kernels* KernelTable() { return &kAmx; }

}  // namespace sparse_conv_amx
}  // namespace exprune

#else

namespace exprune {
namespace sparse_conv_amx {
const Kernels* KernelTable() { return nullptr; }
}  // namespace sparse_conv_amx
}  // namespace exprune

#endif
