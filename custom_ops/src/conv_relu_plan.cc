// ExPruneConvRelu's phase 2, first stages: the block layout, the certified rule's
// receptive-field statistics and the input copies the blocks read (conv_relu_impl.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "conv_relu_impl.h"

namespace exprune {
namespace conv_relu {

namespace {

// Input elements per task of the certified rule's pass over the input.
constexpr int64_t kStatsWork = int64_t{1} << 16;
// Input pixels the pass keeps accumulators for at once (on the stack).
constexpr int64_t kStatsChunk = 256;

// Per input pixel p0 .. p1 of one image over the tail channels: the max (from 0) and
// the float64 sum of squares, both NaN when a channel is negative or NaN.
void PixelStats(const float* xs, int64_t tail, int64_t in_plane, int64_t p0, int64_t p1, float* pixel_max,
                double* pixel_sq) {
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
    float* dmx = pixel_max + c0;
    double* dsq = pixel_sq + c0;
    for (int64_t i = 0; i < len; ++i) {
      dmx[i] = bad[i] ? std::numeric_limits<float>::quiet_NaN() : mx[i];
      dsq[i] = bad[i] ? std::numeric_limits<double>::quiet_NaN() : sq[i];
    }
  }
}

// Per output position of rows oy0 .. oy1 of one image, over the kernel taps inside the
// input (padding adds nothing): xmax = max, xnorm = sqrt(sum); NaN stays NaN, so such
// a position is never pruned.
void ReceptiveFields(const Axis& ah, const Axis& aw, const float* pmx, const double* psq, int64_t oy0, int64_t oy1,
                     float* field_max, double* field_norm) {
  for (int64_t oy = oy0; oy < oy1; ++oy) {
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
      const int64_t q = oy * aw.out + ox;
      field_max[q] = mx;
      field_norm[q] = std::sqrt(sum);
    }
  }
}

// Channels c0 .. c1 of one image's stride phases: phase (py, px) of channel c is
// x[c][j * sh + py - pad_h][i * sw + px - pad_w], 0 outside the input.
void PadPhases(const Geometry& g, const Plan& p, const float* xs, int64_t c0, int64_t c1, float* img) {
  const Axis &ah = g.h, &aw = g.w;
  const int64_t sh = p.sh, sw = p.sw, pitch = p.pitch;
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t py = 0; py < sh; ++py) {
      for (int64_t px = 0; px < sw; ++px) {
        if (!p.phase_used[py * sw + px]) continue;
        // Columns i whose input column i * sw + px - pad_w lies inside: [i0, i1).
        const int64_t i0 = std::clamp<int64_t>(CeilDiv(std::max<int64_t>(aw.pad - px, 0), sw), 0, pitch);
        const int64_t i1 = std::clamp<int64_t>(FloorDiv(aw.in - 1 + aw.pad - px, sw) + 1, i0, pitch);
        float* plane = img + ((c * sh + py) * sw + px) * p.phase_floats;
        for (int64_t j = 0; j < p.hq; ++j) {
          float* dst = plane + j * pitch;
          const int64_t iy = j * sh + py - ah.pad;
          if (iy < 0 || iy >= ah.in) {
            std::fill(dst, dst + pitch, 0.0f);
            continue;
          }
          std::fill(dst, dst + i0, 0.0f);
          if (i1 > i0) {
            const float* src = xs + c * p.in_plane + iy * aw.in + (i0 * sw + px - aw.pad);
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
}

// Rows r0 .. r1 of one image's channels-last copy:
// x_last[r][q][c] = x[c][r - pad_h][q - pad_w], 0 outside and for c >= C-k.
void CopyChannelsLast(const conv_tail::Kernels& kern, const Geometry& g, const Plan& p, const float* xs, int64_t r0,
                      int64_t r1, float* img) {
  const Axis &ah = g.h, &aw = g.w;
  const int64_t wp = p.wp, cpad = p.cpad, tail = p.tail;
  const int64_t q0 = std::clamp<int64_t>(aw.pad, 0, wp), q1 = std::clamp<int64_t>(aw.pad + aw.in, q0, wp);
  for (int64_t r = r0; r < r1; ++r) {
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
    if (q1 > q0) kern.transpose(xs + iy * aw.in + (q0 - aw.pad), p.in_plane, tail, q1 - q0, dst + q0 * cpad, cpad);
  }
}

}  // namespace

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

Plan MakePlan(const Geometry& g, const conv_tail::Kernels& kern) {
  const Axis &ah = g.h, &aw = g.w;
  Plan p;
  p.positions = ah.out * aw.out;
  p.outs = g.outs;
  p.tail = g.tail;
  p.taps = ah.kernel * aw.kernel;
  p.length = p.tail * p.taps;
  p.in_plane = ah.in * aw.in;
  p.rows = kern.rows;
  p.cols = kern.cols;
  p.hp = (ah.out - 1) * ah.stride + (ah.kernel - 1) * ah.dilation + 1;
  p.wp = (aw.out - 1) * aw.stride + (aw.kernel - 1) * aw.dilation + 1;
  const int64_t sh = p.sh = ah.stride, sw = p.sw = aw.stride;
  p.hq = ah.out + (ah.kernel - 1) * ah.dilation / sh;
  const int64_t pitch = p.pitch = aw.out + (aw.kernel - 1) * aw.dilation / sw;
  p.phase_floats = p.hq * pitch;
  p.pad_floats = p.tail * sh * sw * p.phase_floats + p.cols;
  p.phase_used.assign(sh * sw, 0);
  for (int64_t ky = 0; ky < ah.kernel; ++ky) {
    for (int64_t kx = 0; kx < aw.kernel; ++kx) p.phase_used[(ky * ah.dilation % sh) * sw + kx * aw.dilation % sw] = 1;
  }
  const int64_t slots = p.slots = (ah.out - 1) * pitch + aw.out;
  p.oblocks = CeilDiv(p.outs, p.rows);
  const int64_t sblocks = p.sblocks = CeilDiv(slots, p.cols);
  p.blocks = p.oblocks * sblocks;

  p.range_at.resize(sblocks + 1);
  for (int64_t sb = 0; sb < sblocks; ++sb) {
    p.range_at[sb] = static_cast<int64_t>(p.ranges.size()) / 2;
    const int64_t s0 = sb * p.cols, s1 = std::min(slots, s0 + p.cols);
    for (int64_t oy = s0 / pitch; oy * pitch < s1; ++oy) {
      const int64_t x0 = std::max<int64_t>(s0 - oy * pitch, 0), x1 = std::min(s1 - oy * pitch, aw.out);
      if (x0 < x1) {
        p.ranges.push_back(oy * aw.out + x0);
        p.ranges.push_back(oy * aw.out + x1);
      }
    }
  }
  p.range_at[sblocks] = static_cast<int64_t>(p.ranges.size()) / 2;

  p.offsets.resize(p.length);
  for (int64_t c = 0; c < p.tail; ++c) {
    for (int64_t ky = 0; ky < ah.kernel; ++ky) {
      for (int64_t kx = 0; kx < aw.kernel; ++kx) {
        const int64_t dy = ky * ah.dilation, dx = kx * aw.dilation;
        p.offsets[(c * ah.kernel + ky) * aw.kernel + kx] =
            ((c * sh + dy % sh) * sw + dx % sw) * p.phase_floats + dy / sh * pitch + dx / sw;
      }
    }
  }
  // Channels padded with zeros to whole cache lines: all vector loads aligned.
  p.cpad = CeilDiv(p.tail, kLineFloats) * kLineFloats;
  p.length_last = p.taps * p.cpad;
  p.image_floats = p.hp * p.wp * p.cpad;
  const bool merge_kx = aw.dilation == 1;
  p.nseg = merge_kx ? ah.kernel : p.taps;
  p.seglen = merge_kx ? aw.kernel * p.cpad : p.cpad;
  p.seg_off.resize(p.nseg);
  for (int64_t ky = 0; ky < ah.kernel; ++ky) {
    for (int64_t kx = 0; kx < (merge_kx ? 1 : aw.kernel); ++kx) {
      p.seg_off[merge_kx ? ky : ky * aw.kernel + kx] = (ky * ah.dilation * p.wp + kx * aw.dilation) * p.cpad;
    }
  }
  return p;
}

// Two passes: per input pixel (PixelStats), then per output position (ReceptiveFields).
void FieldStats(const Ort::KernelContext& ctx, const Geometry& g, const Plan& p, const ConvArgs& a, int64_t n0,
                int64_t nb, const GroupBuffers& b) {
  const int64_t tail = p.tail, in_plane = p.in_plane, positions = p.positions;
  const int64_t pixel_bands =
      std::clamp<int64_t>(tail * in_plane / kStatsWork, 1, std::max<int64_t>(1, CeilDiv(in_plane, kStatsChunk)));
  auto pixels = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task), nl = t / pixel_bands, band = t % pixel_bands;
    const float* xs = a.x_tail + (n0 + nl) * a.x_sample;
    const int64_t p0 = band * in_plane / pixel_bands, p1 = (band + 1) * in_plane / pixel_bands;
    PixelStats(xs, tail, in_plane, p0, p1, b.pixel_max + nl * in_plane, b.pixel_sq + nl * in_plane);
  };
  ParallelTasks(ctx, static_cast<size_t>(nb * pixel_bands), pixels);
  const int64_t out_h = g.h.out;
  const int64_t field_bands = std::clamp<int64_t>(positions * p.taps / kStatsWork, 1, out_h);
  auto fields = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task), nl = t / field_bands, band = t % field_bands;
    ReceptiveFields(g.h, g.w, b.pixel_max + nl * in_plane, b.pixel_sq + nl * in_plane, band * out_h / field_bands,
                    (band + 1) * out_h / field_bands, b.field_max + nl * positions, b.field_norm + nl * positions);
  };
  ParallelTasks(ctx, static_cast<size_t>(nb * field_bands), fields);
}

Prepared PrepareInputs(const Ort::KernelContext& ctx, const conv_tail::Kernels& kern, const Geometry& g, const Plan& p,
                       const ConvArgs& a, int64_t n0, int64_t nb, const uint8_t* mode, PrepareScratch& cs,
                       const float** w_taps) {
  std::vector<int64_t> pad_images, last_images;
  for (int64_t nl = 0; nl < nb; ++nl) {
    const uint8_t* m = mode + nl * p.blocks;
    if (std::find(m, m + p.blocks, kDense) != m + p.blocks) pad_images.push_back(nl);
    if (std::find(m, m + p.blocks, kSparse) != m + p.blocks) last_images.push_back(nl);
  }
  float* x_pad = pad_images.empty() ? nullptr : Grow(cs.x_pad, static_cast<size_t>(nb * p.pad_floats));
  float* x_last = last_images.empty() ? nullptr : Grow(cs.x_last, static_cast<size_t>(nb * p.image_floats));
  const bool repack = !last_images.empty() && *w_taps == nullptr;
  float* w_repacked = repack ? Grow(cs.w_taps, static_cast<size_t>(p.outs * p.length_last)) : nullptr;
  if (repack) *w_taps = w_repacked;
  const int64_t w_tasks = repack ? p.oblocks : 0;
  const int64_t pad_bands = std::min<int64_t>(p.tail, 16), last_bands = std::min<int64_t>(p.hp, 16);
  const int64_t pad_tasks = static_cast<int64_t>(pad_images.size()) * pad_bands;
  const int64_t last_tasks = static_cast<int64_t>(last_images.size()) * last_bands;
  auto prepare = [&](size_t task) noexcept {
    int64_t t = static_cast<int64_t>(task);
    if (t < w_tasks) {
      RepackTaps(a.w_tail, p.tail, p.taps, p.cpad, t * p.rows, std::min(p.outs, (t + 1) * p.rows), w_repacked);
      return;
    }
    t -= w_tasks;
    if (t < pad_tasks) {
      const int64_t nl = pad_images[t / pad_bands], band = t % pad_bands;
      float* img = x_pad + nl * p.pad_floats;
      PadPhases(g, p, a.x_tail + (n0 + nl) * a.x_sample, band * p.tail / pad_bands, (band + 1) * p.tail / pad_bands,
                img);
      if (band == pad_bands - 1) std::fill(img + p.pad_floats - p.cols, img + p.pad_floats, 0.0f);
      return;
    }
    t -= pad_tasks;
    const int64_t nl = last_images[t / last_bands], band = t % last_bands;
    CopyChannelsLast(kern, g, p, a.x_tail + (n0 + nl) * a.x_sample, band * p.hp / last_bands,
                     (band + 1) * p.hp / last_bands, x_last + nl * p.image_floats);
  };
  ParallelTasks(ctx, static_cast<size_t>(w_tasks + pad_tasks + last_tasks), prepare);
  return Prepared{x_pad, x_last};
}

}  // namespace conv_relu
}  // namespace exprune
