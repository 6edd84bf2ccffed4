#include "conv_relu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "conv_attrs.h"
#include "conv_tail.h"

namespace exprune {

namespace {

// Multiply-adds per compute task if nothing were pruned: large enough that scheduling
// it is small next to the arithmetic.
constexpr int64_t kTaskWork = int64_t{1} << 20;
constexpr int64_t kMaxTasks = 256;
// A dense block is computed as a whole when at least this share of it survives;
// below it its survivors are finished one dot product at a time.
constexpr double kDenseShare = 0.3;
// Rough cost of one sparse survivor relative to one output of a dense block.
constexpr int64_t kSparseCost = 3;
// Bytes of per-image scratch (survivor masks, channels-last input copy) held at once;
// larger batches are processed in groups of images.
constexpr int64_t kGroupBytes = int64_t{32} << 20;
// Input elements per task of the certified rule's pass over the input.
constexpr int64_t kStatsWork = int64_t{1} << 16;
// Input pixels the pass keeps accumulators for at once (on the stack).
constexpr int64_t kStatsChunk = 256;

// The number of nonzero bytes among n, each 0 or 1: 8 at a time, summed per byte
// lane (at most 255 words before a lane could overflow), then across the lanes.
int64_t CountKept(const uint8_t* keep, int64_t n) {
  int64_t count = 0, i = 0;
  while (i + 8 <= n) {
    uint64_t lanes = 0;
    for (int64_t words = 0; words < 255 && i + 8 <= n; ++words, i += 8) {
      uint64_t w;
      std::memcpy(&w, keep + i, 8);
      lanes += w;
    }
    const uint64_t pairs = (lanes & 0x00FF00FF00FF00FFull) + ((lanes >> 8) & 0x00FF00FF00FF00FFull);
    count += static_cast<int64_t>((pairs * 0x0001000100010001ull) >> 48);
  }
  for (; i < n; ++i) count += keep[i];
  return count;
}

// Everything phase 2 needs about the layer's shape.
struct Geometry {
  int64_t batch = 0, tail = 0, outs = 0;
  Axis h, w;  // h is the unit axis for 1-D convs
};

struct ConvArgs {
  const float* partial;
  const float* w_taps;  // w_tail repacked by RepackTaps, or null to repack here
  const float* x_tail;  // x[0, k]: the first tail channel of sample 0
  int64_t x_sample;     // floats per sample of x
  const float* w_tail;
  const float* bias;
  const float* res;  // null when absent
  float* y;
  double ratio, threshold;
  const float* thresholds;  // per output, or null: `threshold` for all
  float clip_max;
  Rule rule;
  double t_k, t_n, z_crit;  // statstest: terms of the partial and of the full sum; z_crit
  RuleInputs extra;         // the rule's inputs 5..7 (kernel_util.h)
};

using Floats = AlignedFloats;

// Floats per cache line: the sparse path pads channels to a multiple of it.
constexpr int64_t kLineFloats = 16;

// w_tail [O][C-k][taps] repacked for the sparse path, outputs [o0, o1):
// dst[o][tap][c] = w[o][c][tap], with the channels padded with zeros to cpad.
void RepackTaps(const float* w, int64_t tail, int64_t taps, int64_t cpad, int64_t o0, int64_t o1, float* dst) {
  for (int64_t o = o0; o < o1; ++o) {
    const float* src = w + o * tail * taps;
    float* d = dst + o * taps * cpad;
    for (int64_t tap = 0; tap < taps; ++tap, d += cpad) {
      for (int64_t c = 0; c < tail; ++c) d[c] = src[c * taps + tap];
      std::fill(d + tail, d + cpad, 0.0f);
    }
  }
}

// Grow-only scratch, kept per thread across runs so that large buffers are not
// mapped and faulted in again on every call.
template <typename Vec>
typename Vec::value_type* Grow(Vec& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}
struct CallScratch {
  std::vector<uint8_t> keep, mode;
  Floats w_taps, x_pad, x_last;
  std::vector<int64_t> kept, cost;
  std::vector<float> pixel_max, field_max;  // certified: per input pixel, per output position
  std::vector<double> pixel_sq, field_norm;
};
struct TaskScratch {
  std::vector<const float*> ptrs;
  std::vector<int64_t> ranges;
};
thread_local CallScratch t_call;
thread_local TaskScratch t_task;

enum Mode : uint8_t { kNone = 0, kSparse = 1, kDense = 2 };

// Phase 2 of the layer: decides every output, writes 0 where pruned and finishes the
// survivors. Returns the number of pruned outputs.
//
// Outputs are split into blocks of `rows` channels x `cols` consecutive slots of the
// output plane. A block where most outputs survive is computed densely: `rows` weight
// rows times `cols` positions in registers, the inputs read as vectors straight from a
// zero-padded copy of the input tail split into stride phases: plane (c, py, px) holds
// the padded input rows py, py + sh, ... and columns px, px + sw, ..., each row
// `pitch` floats. Output (oy, ox) is slot q = oy * pitch + ox, and its tap (ky, kx) of
// channel c is element q + offsets[(c, ky, kx)] (the plane of phase (ky * dh % sh,
// kx * dw % sw), shifted by ky * dh / sh rows and kx * dw / sw columns), so a block is
// a plain offset into the copy; the pitch - OW slots past each row's end are computed
// and dropped. The survivors of the other blocks are finished by dot products of the
// tail weights, repacked channels-last ([O][ky][kx][C-k]), with the patches read in
// place from a zero-padded channels-last copy of the input tail. Blocks with no
// survivor cost nothing.
int64_t FinishConv(const Ort::KernelContext& ctx, const Geometry& g, const ConvArgs& a) {
  const conv_tail::Kernels& kern = conv_tail::Select();
  const Axis &ah = g.h, &aw = g.w;
  const int64_t positions = ah.out * aw.out, outs = g.outs, tail = g.tail;
  const int64_t taps = ah.kernel * aw.kernel, length = tail * taps;
  const int64_t in_plane = ah.in * aw.in;
  if (g.batch == 0 || outs == 0 || positions == 0) return 0;

  const int64_t rows = kern.rows, cols = kern.cols;
  // The region of the input all windows cover, zero-padded: [hp][wp] per channel.
  const int64_t hp = (ah.out - 1) * ah.stride + (ah.kernel - 1) * ah.dilation + 1;
  const int64_t wp = (aw.out - 1) * aw.stride + (aw.kernel - 1) * aw.dilation + 1;
  // Its stride phases, [C-k][sh][sw][hq][pitch] per sample (+ the last block's overrun).
  const int64_t sh = ah.stride, sw = aw.stride;
  const int64_t hq = ah.out + (ah.kernel - 1) * ah.dilation / sh, pitch = aw.out + (aw.kernel - 1) * aw.dilation / sw;
  const int64_t phase_floats = hq * pitch, pad_floats = tail * sh * sw * phase_floats + cols;
  std::vector<uint8_t> phase_used(sh * sw, 0);
  for (int64_t ky = 0; ky < ah.kernel; ++ky) {
    for (int64_t kx = 0; kx < aw.kernel; ++kx) phase_used[(ky * ah.dilation % sh) * sw + kx * aw.dilation % sw] = 1;
  }
  const int64_t slots = (ah.out - 1) * pitch + aw.out;
  const int64_t oblocks = CeilDiv(outs, rows), sblocks = CeilDiv(slots, cols);
  const int64_t blocks = oblocks * sblocks;

  // The output positions of each slot block, as ranges [first, last) of the plane.
  std::vector<int64_t> range_at(sblocks + 1), ranges;
  for (int64_t sb = 0; sb < sblocks; ++sb) {
    range_at[sb] = static_cast<int64_t>(ranges.size()) / 2;
    const int64_t s0 = sb * cols, s1 = std::min(slots, s0 + cols);
    for (int64_t oy = s0 / pitch; oy * pitch < s1; ++oy) {
      const int64_t x0 = std::max<int64_t>(s0 - oy * pitch, 0), x1 = std::min(s1 - oy * pitch, aw.out);
      if (x0 < x1) {
        ranges.push_back(oy * aw.out + x0);
        ranges.push_back(oy * aw.out + x1);
      }
    }
  }
  range_at[sblocks] = static_cast<int64_t>(ranges.size()) / 2;

  // Where each tap (c, ky, kx) of a block's first slot is read, in w_tail's order.
  std::vector<int64_t> offsets(length);
  for (int64_t c = 0; c < tail; ++c) {
    for (int64_t ky = 0; ky < ah.kernel; ++ky) {
      for (int64_t kx = 0; kx < aw.kernel; ++kx) {
        const int64_t dy = ky * ah.dilation, dx = kx * aw.dilation;
        offsets[(c * ah.kernel + ky) * aw.kernel + kx] =
            ((c * sh + dy % sh) * sw + dx % sw) * phase_floats + dy / sh * pitch + dx / sw;
      }
    }
  }
  // The sparse path's channels-last copy, [hp][wp][cpad] with the channels padded with
  // zeros to whole cache lines, and the weights to match, [O][ky][kx][cpad]: a patch is
  // nseg segments of seglen floats, all vector loads aligned.
  const int64_t cpad = CeilDiv(tail, kLineFloats) * kLineFloats, length_last = taps * cpad;
  const int64_t image_floats = hp * wp * cpad;
  const bool merge_kx = aw.dilation == 1;
  const int64_t nseg = merge_kx ? ah.kernel : taps, seglen = merge_kx ? aw.kernel * cpad : cpad;
  std::vector<int64_t> seg_off(nseg);
  for (int64_t ky = 0; ky < ah.kernel; ++ky) {
    for (int64_t kx = 0; kx < (merge_kx ? 1 : aw.kernel); ++kx) {
      seg_off[merge_kx ? ky : ky * aw.kernel + kx] = (ky * ah.dilation * wp + kx * aw.dilation) * cpad;
    }
  }

  constexpr int64_t kSlack = 64;  // keep bytes the dense kernels may read around a block
  const bool certified = a.rule == Rule::kCertified;
  const int64_t per_image =
      outs * positions + blocks + (image_floats + pad_floats) * 4 + (certified ? (in_plane + positions) * 12 : 0);
  const int64_t group = std::clamp<int64_t>(kGroupBytes / std::max<int64_t>(per_image, 1), 1, g.batch);
  CallScratch& cs = t_call;
  uint8_t* keep = Grow(cs.keep, static_cast<size_t>(group * outs * positions + 2 * kSlack)) + kSlack;
  uint8_t* mode = Grow(cs.mode, static_cast<size_t>(group * blocks));
  int64_t* kept = Grow(cs.kept, static_cast<size_t>(group * oblocks));
  int64_t* cost = Grow(cs.cost, static_cast<size_t>(group * oblocks));  // in outputs of dense work
  const float* w_taps = a.w_taps;                                       // repacked on first need when not given
  float* pixel_max = certified ? Grow(cs.pixel_max, static_cast<size_t>(group * in_plane)) : nullptr;
  double* pixel_sq = certified ? Grow(cs.pixel_sq, static_cast<size_t>(group * in_plane)) : nullptr;
  float* field_max = certified ? Grow(cs.field_max, static_cast<size_t>(group * positions)) : nullptr;
  double* field_norm = certified ? Grow(cs.field_norm, static_cast<size_t>(group * positions)) : nullptr;
  int64_t total_kept = 0;

  for (int64_t n0 = 0; n0 < g.batch; n0 += group) {
    const int64_t nb = std::min(group, g.batch - n0);

    // ---- certified: the statistics of every output position's receptive field, in
    // two passes. Per input pixel over the tail channels: the max (from 0) and the
    // float64 sum of squares, both NaN when a channel is negative or NaN. Then per
    // output position over the kernel taps inside the input (padding adds nothing):
    // xmax = max, xnorm = sqrt(sum); NaN stays NaN, so such a position is never pruned.
    if (certified) {
      const int64_t pixel_bands =
          std::clamp<int64_t>(tail * in_plane / kStatsWork, 1, std::max<int64_t>(1, CeilDiv(in_plane, kStatsChunk)));
      auto pixels = [&](size_t task) noexcept {
        const int64_t t = static_cast<int64_t>(task), nl = t / pixel_bands, band = t % pixel_bands;
        const float* xs = a.x_tail + (n0 + nl) * a.x_sample;
        const int64_t p0 = band * in_plane / pixel_bands, p1 = (band + 1) * in_plane / pixel_bands;
        for (int64_t c0 = p0; c0 < p1; c0 += kStatsChunk) {
          const int64_t len = std::min(kStatsChunk, p1 - c0);
          double sq[kStatsChunk];
          float mx[kStatsChunk];
          uint8_t bad[kStatsChunk];
          std::fill(sq, sq + len, 0.0);
          std::fill(mx, mx + len, 0.0f);
          std::fill(bad, bad + len, uint8_t{0});
          for (int64_t c = 0; c < tail; ++c) {
            const float* src = xs + c * in_plane + c0;
#pragma omp simd
            for (int64_t i = 0; i < len; ++i) {
              const float v = src[i];
              bad[i] |= !(v >= 0.0f);
              mx[i] = v > mx[i] ? v : mx[i];
              sq[i] += static_cast<double>(v) * static_cast<double>(v);
            }
          }
          float* dmx = pixel_max + nl * in_plane + c0;
          double* dsq = pixel_sq + nl * in_plane + c0;
          for (int64_t i = 0; i < len; ++i) {
            dmx[i] = bad[i] ? std::numeric_limits<float>::quiet_NaN() : mx[i];
            dsq[i] = bad[i] ? std::numeric_limits<double>::quiet_NaN() : sq[i];
          }
        }
      };
      ParallelTasks(ctx, static_cast<size_t>(nb * pixel_bands), pixels);
      const int64_t field_bands = std::clamp<int64_t>(positions * taps / kStatsWork, 1, ah.out);
      auto fields = [&](size_t task) noexcept {
        const int64_t t = static_cast<int64_t>(task), nl = t / field_bands, band = t % field_bands;
        const float* pmx = pixel_max + nl * in_plane;
        const double* psq = pixel_sq + nl * in_plane;
        for (int64_t oy = band * ah.out / field_bands; oy < (band + 1) * ah.out / field_bands; ++oy) {
          for (int64_t ox = 0; ox < aw.out; ++ox) {
            double sum = 0.0;
            float mx = 0.0f;
            for (int64_t ky = 0; ky < ah.kernel; ++ky) {
              const int64_t iy = oy * ah.stride - ah.pad + ky * ah.dilation;
              if (iy < 0 || iy >= ah.in) continue;
              for (int64_t kx = 0; kx < aw.kernel; ++kx) {
                const int64_t ix = ox * aw.stride - aw.pad + kx * aw.dilation;
                if (ix < 0 || ix >= aw.in) continue;
                const float v = pmx[iy * aw.in + ix];
                mx = (v > mx || v != v) ? v : mx;  // once NaN, stays NaN
                sum += psq[iy * aw.in + ix];
              }
            }
            const int64_t p = nl * positions + oy * aw.out + ox;
            field_max[p] = mx;
            field_norm[p] = std::sqrt(sum);
          }
        }
      };
      ParallelTasks(ctx, static_cast<size_t>(nb * field_bands), fields);
    }

    // ---- decide every output; classify the blocks
    auto decide = [&](size_t task) noexcept {
      const int64_t t = static_cast<int64_t>(task), nl = t / oblocks, ob = t % oblocks;
      const int64_t o0 = ob * rows, o1 = std::min(outs, o0 + rows);
      uint8_t* kb = keep + nl * outs * positions;
      int64_t count = 0;
      for (int64_t o = o0; o < o1; ++o) {
        const int64_t i = ((n0 + nl) * outs + o) * positions;
        const float* res = a.res != nullptr ? a.res + i : nullptr;
        switch (a.rule) {
          case Rule::kThreshold: {
            const double threshold = a.thresholds != nullptr ? static_cast<double>(a.thresholds[o]) : a.threshold;
            count +=
                kern.decide(a.partial + i, res, a.bias[o], a.ratio, threshold, positions, a.y + i, kb + o * positions);
            break;
          }
          case Rule::kStatsTest:
            count += kern.decide_stats(a.partial + i, a.extra.partial_sq + i, res, a.bias[o], a.t_k, a.t_n, a.z_crit,
                                       positions, a.y + i, kb + o * positions);
            break;
          case Rule::kCertified:
            count += kern.decide_certified(a.partial + i, res, a.bias[o], a.extra.w_pos_sum[o], a.extra.w_pos_norm[o],
                                           field_max + nl * positions, field_norm + nl * positions, positions, a.y + i,
                                           kb + o * positions);
            break;
        }
      }
      kept[t] = count;
      int64_t work = 0;
      for (int64_t sb = 0; sb < sblocks; ++sb) {
        int64_t live = 0, size = 0;
        for (int64_t r = range_at[sb]; r < range_at[sb + 1]; ++r) {
          const int64_t p0 = ranges[2 * r], p1 = ranges[2 * r + 1];
          size += p1 - p0;
          for (int64_t o = o0; o < o1; ++o) live += CountKept(kb + o * positions + p0, p1 - p0);
        }
        const double share = static_cast<double>(live) / static_cast<double>(std::max<int64_t>(size * (o1 - o0), 1));
        const Mode mb = live == 0 ? kNone : share >= kDenseShare ? kDense : kSparse;
        mode[nl * blocks + ob * sblocks + sb] = mb;
        work += mb == kDense ? rows * cols : mb == kSparse ? kSparseCost * live : 0;
      }
      cost[t] = work;
    };
    ParallelTasks(ctx, static_cast<size_t>(nb * oblocks), decide);
    int64_t work = 0;
    for (int64_t t = 0; t < nb * oblocks; ++t) {
      total_kept += kept[t];
      work += cost[t] * length;
    }

    // ---- the inputs the blocks need: padded copies, channels-last copies, repacked weights
    std::vector<int64_t> pad_images, last_images;
    for (int64_t nl = 0; nl < nb; ++nl) {
      const uint8_t* m = mode + nl * blocks;
      if (std::find(m, m + blocks, kDense) != m + blocks) pad_images.push_back(nl);
      if (std::find(m, m + blocks, kSparse) != m + blocks) last_images.push_back(nl);
    }
    float* x_pad = pad_images.empty() ? nullptr : Grow(cs.x_pad, static_cast<size_t>(nb * pad_floats));
    float* x_last = last_images.empty() ? nullptr : Grow(cs.x_last, static_cast<size_t>(nb * image_floats));
    const bool repack = !last_images.empty() && w_taps == nullptr;
    float* w_repacked = repack ? Grow(cs.w_taps, static_cast<size_t>(outs * length_last)) : nullptr;
    if (repack) w_taps = w_repacked;
    const int64_t w_tasks = repack ? oblocks : 0;
    const int64_t pad_bands = std::min<int64_t>(tail, 16), last_bands = std::min<int64_t>(hp, 16);
    const int64_t pad_tasks = static_cast<int64_t>(pad_images.size()) * pad_bands;
    const int64_t last_tasks = static_cast<int64_t>(last_images.size()) * last_bands;
    const int64_t q0 = std::clamp<int64_t>(aw.pad, 0, wp), q1 = std::clamp<int64_t>(aw.pad + aw.in, q0, wp);
    auto prepare = [&](size_t task) noexcept {
      int64_t t = static_cast<int64_t>(task);
      if (t < w_tasks) {
        RepackTaps(a.w_tail, tail, taps, cpad, t * rows, std::min(outs, (t + 1) * rows), w_repacked);
        return;
      }
      t -= w_tasks;
      if (t < pad_tasks) {  // phase (py, px) of channel c: x[c][j * sh + py - pad_h][i * sw + px - pad_w]
        const int64_t nl = pad_images[t / pad_bands], band = t % pad_bands;
        const float* xs = a.x_tail + (n0 + nl) * a.x_sample;
        float* img = x_pad + nl * pad_floats;
        const int64_t c0 = band * tail / pad_bands, c1 = (band + 1) * tail / pad_bands;
        for (int64_t c = c0; c < c1; ++c) {
          for (int64_t py = 0; py < sh; ++py) {
            for (int64_t px = 0; px < sw; ++px) {
              if (!phase_used[py * sw + px]) continue;
              // Columns i whose input column i * sw + px - pad_w lies inside: [i0, i1).
              const int64_t i0 = std::clamp<int64_t>(CeilDiv(std::max<int64_t>(aw.pad - px, 0), sw), 0, pitch);
              const int64_t i1 = std::clamp<int64_t>(FloorDiv(aw.in - 1 + aw.pad - px, sw) + 1, i0, pitch);
              float* plane = img + ((c * sh + py) * sw + px) * phase_floats;
              for (int64_t j = 0; j < hq; ++j) {
                float* dst = plane + j * pitch;
                const int64_t iy = j * sh + py - ah.pad;
                if (iy < 0 || iy >= ah.in) {
                  std::fill(dst, dst + pitch, 0.0f);
                  continue;
                }
                std::fill(dst, dst + i0, 0.0f);
                if (i1 > i0) {
                  const float* src = xs + c * in_plane + iy * aw.in + (i0 * sw + px - aw.pad);
                  if (sw == 1) {
                    std::copy(src, src + (i1 - i0), dst + i0);
                  } else {
                    for (int64_t i = 0; i < i1 - i0; ++i) dst[i0 + i] = src[i * sw];
                  }
                }
                std::fill(dst + i1, dst + pitch, 0.0f);
              }
            }
          }
        }
        if (band == pad_bands - 1) std::fill(img + pad_floats - cols, img + pad_floats, 0.0f);
        return;
      }
      t -= pad_tasks;
      // x_last[r][q][c] = x[c][r - pad_h][q - pad_w], 0 outside and for c >= C-k
      const int64_t nl = last_images[t / last_bands], band = t % last_bands;
      const float* xs = a.x_tail + (n0 + nl) * a.x_sample;
      float* img = x_last + nl * image_floats;
      for (int64_t r = band * hp / last_bands; r < (band + 1) * hp / last_bands; ++r) {
        float* dst = img + r * wp * cpad;
        const int64_t iy = r - ah.pad;
        if (iy < 0 || iy >= ah.in) {
          std::fill(dst, dst + wp * cpad, 0.0f);
          continue;
        }
        std::fill(dst, dst + q0 * cpad, 0.0f);
        std::fill(dst + q1 * cpad, dst + wp * cpad, 0.0f);
        if (cpad > tail) {
          for (int64_t q = q0; q < q1; ++q) std::fill(dst + q * cpad + tail, dst + (q + 1) * cpad, 0.0f);
        }
        if (q1 > q0) kern.transpose(xs + iy * aw.in + (q0 - aw.pad), in_plane, tail, q1 - q0, dst + q0 * cpad, cpad);
      }
    };
    ParallelTasks(ctx, static_cast<size_t>(w_tasks + pad_tasks + last_tasks), prepare);

    // ---- finish the survivors: tasks of (sample, run of slot blocks, run of output blocks)
    const int64_t want = std::clamp<int64_t>(work / kTaskWork, 1, kMaxTasks);
    const int64_t want_image = CeilDiv(want, nb);
    const int64_t tile = CeilDiv(sblocks, std::min(sblocks, want_image));  // slot blocks per task
    const int64_t tiles = CeilDiv(sblocks, tile);
    const int64_t ochunk = CeilDiv(oblocks, std::clamp<int64_t>(want_image / tiles, 1, oblocks));
    const int64_t ochunks = CeilDiv(oblocks, ochunk);

    auto compute = [&](size_t task) noexcept {
      const int64_t t = static_cast<int64_t>(task);
      const int64_t nl = t / (tiles * ochunks), tl = (t / ochunks) % tiles, oc = t % ochunks;
      const int64_t n = n0 + nl;
      const int64_t sb0 = tl * tile, sb1 = std::min(sblocks, sb0 + tile);
      const int64_t ob0 = oc * ochunk, ob1 = std::min(oblocks, ob0 + ochunk);
      const uint8_t* m = mode + nl * blocks;
      const uint8_t* kb = keep + nl * outs * positions;
      bool any_dense = false, any_sparse = false;
      for (int64_t ob = ob0; ob < ob1; ++ob) {
        for (int64_t sb = sb0; sb < sb1; ++sb) {
          any_dense |= m[ob * sblocks + sb] == kDense;
          any_sparse |= m[ob * sblocks + sb] == kSparse;
        }
      }
      if (!any_dense && !any_sparse) return;
      TaskScratch& ts = t_task;
      const float** ptrs = Grow(ts.ptrs, static_cast<size_t>(rows));

      if (any_dense) {
        for (int64_t sb = sb0; sb < sb1; ++sb) {
          const float* src = x_pad + nl * pad_floats + sb * cols;
          for (int64_t ob = ob0; ob < ob1; ++ob) {
            if (m[ob * sblocks + sb] != kDense) continue;
            const int64_t o0 = ob * rows, o1 = std::min(outs, o0 + rows);
            for (int64_t o = o0; o < o1; ++o) ptrs[o - o0] = a.w_tail + o * length;
            const int64_t i0 = (n * outs + o0) * positions;
            const conv_tail::DenseOut dst{a.partial + i0,
                                          a.res != nullptr ? a.res + i0 : nullptr,
                                          kb + o0 * positions,
                                          a.y + i0,
                                          a.bias + o0,
                                          positions,
                                          sb * cols,
                                          pitch,
                                          aw.out,
                                          slots,
                                          a.clip_max};
            kern.dense(src, offsets.data(), length, ptrs, static_cast<int>(o1 - o0), dst);
          }
        }
      }

      if (any_sparse) {
        int64_t* task_ranges = Grow(ts.ranges, static_cast<size_t>(2 * (range_at[sb1] - range_at[sb0])));
        conv_tail::SparseJob job{};
        job.x = x_last + nl * image_floats;
        job.out_w = aw.out;
        job.row_step = ah.stride * wp * cpad;
        job.col_step = aw.stride * cpad;
        job.seg_off = seg_off.data();
        job.nseg = nseg;
        job.seglen = seglen;
        job.ranges = task_ranges;
        job.clip_max = a.clip_max;
        for (int64_t ob = ob0; ob < ob1; ++ob) {
          // The position ranges of this task's sparse blocks in this row of blocks.
          job.nranges = 0;
          for (int64_t sb = sb0; sb < sb1; ++sb) {
            if (m[ob * sblocks + sb] != kSparse) continue;
            for (int64_t r = range_at[sb]; r < range_at[sb + 1]; ++r, ++job.nranges) {
              task_ranges[2 * job.nranges] = ranges[2 * r];
              task_ranges[2 * job.nranges + 1] = ranges[2 * r + 1];
            }
          }
          if (job.nranges == 0) continue;
          for (int64_t o = ob * rows; o < std::min(outs, (ob + 1) * rows); ++o) {
            const int64_t i = (n * outs + o) * positions;
            job.w = w_taps + o * length_last;
            job.keep = kb + o * positions;
            job.partial = a.partial + i;
            job.res = a.res != nullptr ? a.res + i : nullptr;
            job.y = a.y + i;
            job.bias = a.bias[o];
            kern.sparse(job);
          }
        }
      }
    };
    ParallelTasks(ctx, static_cast<size_t>(nb * tiles * ochunks), compute);
  }
  return g.batch * outs * positions - total_kept;
}

}  // namespace

ConvReluKernel::ConvReluKernel(const OrtKernelInfo* info, std::string label)
    : PruneKernel(info, std::move(label)), conv_(ReadConvAttrs(info)) {
  // group and kernel_shape are accepted so that a Conv's attributes can be copied
  // over unchanged; they only have to agree with what the op does.
  if (conv_.group != 1) {
    throw OpError("attribute group = " + std::to_string(conv_.group) + " is not supported (only 1)");
  }
  PackConstantWeights(info);
}

// When w_tail is a constant initializer, its repacking for the sparse path is done
// once here instead of on every run. Anything unexpected just leaves it to Compute,
// which validates the inputs; nothing is packed when nothing can be pruned.
void ConvReluKernel::PackConstantWeights(const OrtKernelInfo* info) noexcept {
  if (!attrs_.CanPrune()) return;
  try {
    int is_constant = 0;
    const Ort::ConstValue w = Ort::ConstKernelInfo(info).GetTensorConstantInput(2, &is_constant);
    if (!is_constant || !w || !w.IsTensor()) return;
    const Ort::TensorTypeAndShapeInfo type = w.GetTensorTypeAndShapeInfo();
    if (type.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return;
    std::vector<int64_t> shape = type.GetShape();
    if ((shape.size() != 3 && shape.size() != 4) ||
        std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 1; })) {
      return;
    }
    const int64_t taps = ElementCount(std::vector<int64_t>(shape.begin() + 2, shape.end()));
    const int64_t cpad = CeilDiv(shape[1], kLineFloats) * kLineFloats;
    packed_.resize(static_cast<size_t>(shape[0] * taps * cpad));
    RepackTaps(w.GetTensorData<float>(), shape[1], taps, cpad, 0, shape[0], packed_.data());
    packed_from_ = w.GetTensorData<float>();
    packed_shape_ = std::move(shape);
  } catch (...) {
    packed_.clear();
    packed_from_ = nullptr;
  }
}

void ConvReluKernel::Compute(OrtKernelContext* context) const {
  Ort::KernelContext ctx(context);
  const Input partial = GetInput(ctx, 0, "partial", false);
  const Input x = GetInput(ctx, 1, "x", false);
  const Input w = GetInput(ctx, 2, "w_tail", false);
  const Input bias = GetInput(ctx, 3, "bias", false);
  const Input res = GetInput(ctx, 4, "residual", true);

  const size_t rank = x.shape.size();
  if (rank != 3 && rank != 4) {
    throw OpError("x must have shape [N, C, W] or [N, C, H, W] (spatial rank 1 or 2), got " + ShapeText(x.shape));
  }
  const size_t sr = rank - 2;
  const int64_t batch = x.shape[0], channels = x.shape[1], k = attrs_.k;
  if (partial.shape.size() != rank || partial.shape[0] != batch) {
    throw OpError("partial must have shape [N, O, *OS] with the rank and batch of x " + ShapeText(x.shape) + ", got " +
                  ShapeText(partial.shape));
  }
  if (k >= channels) {
    throw OpError("attribute k = " + std::to_string(k) + " must be < n = " + std::to_string(channels) +
                  " (the channels of x)");
  }
  const int64_t outs = partial.shape[1], tail = channels - k;
  if (w.shape.size() != rank || w.shape[0] != outs || w.shape[1] != tail ||
      std::any_of(w.shape.begin() + 2, w.shape.end(), [](int64_t d) { return d < 1; })) {
    throw OpError("w_tail must have shape [O, C-k, *K] with O = " + std::to_string(outs) + ", C-k = " +
                  std::to_string(tail) + " and " + std::to_string(sr) + " kernel dims >= 1, got " + ShapeText(w.shape));
  }
  if (bias.shape != std::vector<int64_t>{outs}) {
    throw OpError("bias must have shape [O] = " + ShapeText({outs}) + ", got " + ShapeText(bias.shape));
  }
  if (res.present && res.shape != partial.shape) {
    throw OpError("residual must have the shape of partial " + ShapeText(partial.shape) + ", got " +
                  ShapeText(res.shape));
  }
  const std::vector<Axis> axes =
      ResolveAxes(conv_, std::vector<int64_t>(x.shape.begin() + 2, x.shape.end()),
                  std::vector<int64_t>(w.shape.begin() + 2, w.shape.end()), "w_tail", w.shape);
  std::vector<int64_t> implied{batch, outs};
  for (const Axis& a : axes) implied.push_back(a.out);
  if (implied != partial.shape) {
    throw OpError("x " + ShapeText(x.shape) + ", w_tail " + ShapeText(w.shape) +
                  " and the strides/pads/dilations/auto_pad attributes give output shape " + ShapeText(implied) +
                  ", but partial has shape " + ShapeText(partial.shape));
  }

  CheckThresholdCount(attrs_, outs);
  const RuleInputs extra = GetRuleInputs(ctx, attrs_.rule, partial.shape, outs);
  const Outputs out = GetOutputs(ctx, partial.shape);

  Geometry g;
  g.batch = batch;
  g.tail = tail;
  g.outs = outs;
  g.h = sr == 2 ? axes[0] : Axis{};
  g.w = axes[sr - 1];
  const int64_t taps = g.h.kernel * g.w.kernel;
  const bool packed = packed_from_ != nullptr && packed_from_ == w.data && packed_shape_ == w.shape;
  const ConvArgs args{partial.data,
                      packed ? packed_.data() : nullptr,
                      x.data + k * g.h.in * g.w.in,
                      channels * g.h.in * g.w.in,
                      w.data,
                      bias.data,
                      res.present ? res.data : nullptr,
                      out.y,
                      static_cast<double>(channels) / static_cast<double>(k),
                      attrs_.threshold,
                      attrs_.thresholds.empty() ? nullptr : attrs_.thresholds.data(),
                      attrs_.clip_max,
                      attrs_.rule,
                      static_cast<double>(k * taps),
                      static_cast<double>(channels * taps),
                      attrs_.z_crit,
                      extra};
  const int64_t pruned = FinishConv(ctx, g, args);

  if (out.stats != nullptr) {
    out.stats[0] = pruned;
    out.stats[1] = partial.size;
  }
}

}  // namespace exprune
