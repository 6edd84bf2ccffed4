// The AVX-512 tile kernels of sparse_conv_tile.h. CMakeLists.txt builds this file
// alone with the AVX-512 flags; without them it compiles to a null table.
#include "sparse_conv_tile.h"

#if defined(__AVX512F__) && defined(__FMA__)

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_ps() as the unused merge source,
// which trips -W(maybe-)uninitialized wherever they are inlined; it is a false alarm.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <vector>

#include "transpose_avx512.h"

namespace exprune {
namespace sparse_conv {
namespace {

struct Vec {
  using V = __m512;
  using M = __mmask16;
  static constexpr int kLanes = 16;
  static V Zero() { return _mm512_setzero_ps(); }
  static V Set1(float x) { return _mm512_set1_ps(x); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static M Mask(int n) { return n >= 16 ? M(0xFFFF) : (n <= 0 ? M(0) : static_cast<M>((1u << n) - 1u)); }
  // Masked-out lanes are neither read nor able to fault.
  static V LoadMasked(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static void StoreMasked(float* p, M m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  // max and min return their second operand when either is NaN: v passes through.
  static V Relu(V v, V clip) { return _mm512_min_ps(clip, _mm512_max_ps(_mm512_setzero_ps(), v)); }
  // Keeps v in a register: GCC otherwise folds a weight shared by two multiply-adds
  // back into both as memory operands, loading it twice.
  static void Pin(V& v) { asm("" : "+v"(v)); }
  static void Transpose(V (&r)[16]) { avx512::Transpose16x16(r); }
};

}  // namespace
}  // namespace sparse_conv
}  // namespace exprune

#include "sparse_conv_tile_impl.h"

namespace exprune {
namespace sparse_conv {
namespace {

// The row's channels are first transposed into `scratch` (a pixel's channels
// contiguous), 16 channels at a time so that only 16 rows of x are streamed at once;
// then each pixel's non-zeros are compressed in registers and stored as whole vectors,
// in two runs (those also non-zero in the paired column, then the rest) and pixel after
// pixel, so that a store's unused tail is overwritten by the next entries (or lands in
// the kListSlack spare room). Nothing branches on the data.
int64_t List(const ListIn& a) {
  static_assert(kListBlock == Vec::kLanes, "one vector per block of channels");
  const int64_t cpad = (a.channels + 15) / 16 * 16, blocks = cpad / 16;
  const __m512 zero = _mm512_setzero_ps();
  // Per pixel and block of 16 channels, the non-zero channels (NaN is not zero).
  thread_local std::vector<__mmask16> masks;
  if (masks.size() < static_cast<size_t>(a.in_w * blocks)) masks.resize(static_cast<size_t>(a.in_w * blocks));
  for (int64_t cb = 0; cb < cpad; cb += 16) {
    for (int64_t ix0 = 0; ix0 < a.in_w; ix0 += 16) {
      const __mmask16 pm = Vec::Mask(static_cast<int>(a.in_w - ix0 < 16 ? a.in_w - ix0 : 16));
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        r[i] = cb + i < a.channels ? _mm512_maskz_loadu_ps(pm, a.src + (cb + i) * a.plane + ix0) : zero;
      }
      for (int i = 0; i < 16 && a.next != nullptr && cb + i < a.channels; ++i) {
        _mm_prefetch(reinterpret_cast<const char*>(a.next + (cb + i) * a.plane + ix0), _MM_HINT_T0);
      }
      Vec::Transpose(r);
      for (int p = 0; p < 16; ++p) _mm512_storeu_ps(a.scratch + (ix0 + p) * cpad + cb, r[p]);
      for (int p = 0; p < 16 && ix0 + p < a.in_w; ++p) {
        masks[(ix0 + p) * blocks + cb / 16] = _mm512_cmp_ps_mask(r[p], zero, _CMP_NEQ_UQ);
      }
    }
  }
  const __m512i steps = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(a.off_step));
  // Entry = {value, offset}: interleave the compressed values and offsets.
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  // The non-zero channels of input column ix (in the row) in block cb.
  auto nonzero = [&](int64_t ix, int64_t cb) -> __mmask16 { return masks[ix * blocks + cb / 16]; };
  int32_t at = 0;
  auto store = [&](int64_t ix, int64_t cb, __mmask16 keep) {
    const __m512 v = _mm512_maskz_compress_ps(keep, _mm512_loadu_ps(a.scratch + ix * cpad + cb));
    const __m512i off = _mm512_add_epi32(_mm512_set1_epi32(a.off0 + static_cast<int32_t>(cb) * a.off_step), steps);
    const __m512 o = _mm512_castsi512_ps(_mm512_maskz_compress_epi32(keep, off));
    float* e = reinterpret_cast<float*>(a.entries + at);
    _mm512_storeu_ps(e, _mm512_permutex2var_ps(v, lo, o));
    _mm512_storeu_ps(e + 16, _mm512_permutex2var_ps(v, hi, o));
    at += __builtin_popcount(keep);
  };
  for (int64_t q = 0; q < a.cols; ++q) {
    a.start[q] = at;
    const int64_t ix = q - a.pad, partner = (q ^ 1) - a.pad;
    const bool inside = ix >= 0 && ix < a.in_w, paired = a.pair && partner >= 0 && partner < a.in_w;
    if (inside && paired) {
      for (int64_t cb = 0; cb < cpad; cb += 16) store(ix, cb, nonzero(ix, cb) & nonzero(partner, cb));
    }
    if (q % 2 == 0) a.both[q / 2] = at - a.start[q];
    if (inside && paired) {
      for (int64_t cb = 0; cb < cpad; cb += 16) {
        store(ix, cb, static_cast<__mmask16>(nonzero(ix, cb) & ~nonzero(partner, cb)));
      }
    } else if (inside) {
      for (int64_t cb = 0; cb < cpad; cb += 16) store(ix, cb, nonzero(ix, cb));
    }
    ++at;  // the spare slot
  }
  a.start[a.cols] = at++;
  return at - (a.cols + 1);
}

// For rows with few non-zeros, as List's compress-and-store costs a vector per pixel and
// block of 16 channels whatever it keeps: each channel's row is compared a vector at a
// time into bit masks over its columns (non-zero, and non-zero in the paired column too)
// and per-column counts, then the set bits are visited, a channel at a time, and each
// stored in its column's next slot. The same lists as List's.
int64_t ListFew(const ListIn& a) {
  const int64_t words = (a.in_w + 63) / 64;
  thread_local std::vector<uint64_t> bits;   // per channel: non-zero words, then shared words
  thread_local std::vector<int32_t> counts;  // per column: non-zeros, then shared ones
  bits.assign(static_cast<size_t>(a.channels * 2 * words), 0);
  counts.assign(static_cast<size_t>(2 * a.in_w + 32), 0);
  int32_t* total = counts.data();
  int32_t* shared = total + a.in_w + 16;
  const __m512 zero = _mm512_setzero_ps();
  const __m512i one = _mm512_set1_epi32(1);
  // Lanes whose padded column is even, so that their partner is the next column.
  const __mmask16 even = (a.pad % 2 == 0) ? 0x5555 : 0xAAAA;
  for (int64_t c = 0; c < a.channels; ++c) {
    const float* row = a.src + c * a.plane;
    uint64_t* nz_bits = bits.data() + c * 2 * words;
    __m512 before = zero;  // the row's previous 16 values
    for (int64_t ix0 = 0; ix0 < a.in_w; ix0 += 16) {
      const int64_t left = a.in_w - ix0;
      const __mmask16 pm = Vec::Mask(static_cast<int>(left < 16 ? left : 16));
      const __m512 v = _mm512_maskz_loadu_ps(pm, row + ix0);
      const __mmask16 nz = _mm512_cmp_ps_mask(v, zero, _CMP_NEQ_UQ);
      __mmask16 both = 0;
      if (a.pair) {  // the partner's value; outside the row, 0
        const __mmask16 right = Vec::Mask(static_cast<int>(left - 1 < 16 ? left - 1 : 16));
        const __m512 vr = _mm512_maskz_loadu_ps(right, row + ix0 + 1);
        const __m512 vl = _mm512_castsi512_ps(
            _mm512_alignr_epi32(_mm512_castps_si512(v), _mm512_castps_si512(before), 15));  // lane i: x[ix0 + i - 1]
        both = nz & _mm512_cmp_ps_mask(_mm512_mask_blend_ps(even, vl, vr), zero, _CMP_NEQ_UQ);
        before = v;
        const __m512i sh = _mm512_loadu_si512(shared + ix0);
        _mm512_storeu_si512(shared + ix0, _mm512_mask_add_epi32(sh, both, sh, one));
        nz_bits[words + ix0 / 64] |= uint64_t{both} << (ix0 % 64);
      }
      const __m512i t = _mm512_loadu_si512(total + ix0);
      _mm512_storeu_si512(total + ix0, _mm512_mask_add_epi32(t, nz, t, one));
      nz_bits[ix0 / 64] |= uint64_t{nz} << (ix0 % 64);
    }
    if (a.next != nullptr) {
      for (int64_t ix = 0; ix < a.in_w; ix += 16)
        _mm_prefetch(reinterpret_cast<const char*>(a.next + c * a.plane + ix), _MM_HINT_T0);
    }
  }
  // Column starts as List's; total and shared become the next slots of the two parts.
  int32_t at = 0;
  for (int64_t q = 0; q < a.cols; ++q) {
    a.start[q] = at;
    const int64_t ix = q - a.pad;
    const bool inside = ix >= 0 && ix < a.in_w;
    if (q % 2 == 0) a.both[q / 2] = inside ? shared[ix] : 0;
    if (inside) {
      const int32_t count = total[ix], common = shared[ix];
      shared[ix] = at;
      total[ix] = at + common;
      at += count;
    }
    ++at;  // the spare slot
  }
  a.start[a.cols] = at++;
  for (int64_t c = 0; c < a.channels; ++c) {
    const float* row = a.src + c * a.plane;
    const int32_t off = a.off0 + static_cast<int32_t>(c) * a.off_step;
    const uint64_t* nz_bits = bits.data() + c * 2 * words;
    for (int64_t wi = 0; wi < words; ++wi) {
      uint64_t both = nz_bits[words + wi], single = nz_bits[wi] & ~both;
      for (; both != 0; both &= both - 1) {
        const int64_t ix = wi * 64 + __builtin_ctzll(both);
        a.entries[shared[ix]++] = Entry{row[ix], off};
      }
      for (; single != 0; single &= single - 1) {
        const int64_t ix = wi * 64 + __builtin_ctzll(single);
        a.entries[total[ix]++] = Entry{row[ix], off};
      }
    }
  }
  return at - (a.cols + 1);
}

int64_t ListAny(const ListIn& a) { return a.few ? ListFew(a) : List(a); }

// 32 zmm registers: 24 accumulators, the broadcast input and weight vectors.
const Kernels kAvx512 = {
    "avx512", Vec::kLanes, {MakeShape<1, 24>(), MakeShape<2, 14>(), MakeShape<2, 12>()}, Finish, ListAny};

}  // namespace

const Kernels* Avx512Table() { return &kAvx512; }

}  // namespace sparse_conv
}  // namespace exprune

#else

namespace exprune {
namespace sparse_conv {
const Kernels* Avx512Table() { return nullptr; }
}  // namespace sparse_conv
}  // namespace exprune

#endif
