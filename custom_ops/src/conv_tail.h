// The inner loops of ExPruneConvRelu's phase 2 (conv_relu_impl.h), built once per
// instruction set and picked when first used: AVX-512, AVX2+FMA, or portable C++.
//
// Two ways to finish the tail of surviving outputs:
//   dense  - a register-blocked product of `rows` outputs times `cols` positions:
//            weights broadcast from w_tail rows, inputs read as vectors of
//            consecutive positions from a zero-padded copy of the input (see
//            conv_relu_plan.cc); used where most outputs of the block survive.
//   sparse - dot products of one output's tail weights with the patches of up to
//            `group` surviving positions, read in place from a channels-last copy of
//            the input; used where survivors are scattered.
// Both give the same sum up to float rounding order.
//
// The instruction-set files include this header: keep it free of inline code (see
// conv_tail_impl.h).
#pragma once

#include <cstdint>

namespace exprune {
namespace conv_tail {

// A dense block's positions are `cols` consecutive slots q0, q0 + 1, ... of a plane
// whose rows are `pitch` slots wide, of which the first `out_w` are output columns
// (slot q is output (q / pitch, q % pitch)); the other slots, and those at or past
// `end`, are computed but dropped. For each of the block's outputs r < nrows and
// kept position i (keep[i] != 0):
//   y[i] = act(partial[i] + dot + (bias[r] + res[i]))     (res may be null: base = bias[r])
// with every pointer at the block's first output and position 0 of the plane,
// consecutive outputs `stride` elements apart. keep may be read up to 64 bytes either
// side of the bytes of the block's positions.
struct DenseOut {
  const float* partial;
  const float* res;
  const uint8_t* keep;
  float* y;
  const float* bias;
  int64_t stride;
  int64_t q0, pitch, out_w, end;
  float clip_max;
};

// One output channel's scattered survivors. Its patch at plane position p = oy * out_w
// + ox is nseg segments of seglen floats at x + oy * row_step + ox * col_step +
// seg_off[s]; the weights are the matching segments of w, back to back.
struct SparseJob {
  const float* w;
  const float* x;
  int64_t out_w, row_step, col_step;
  const int64_t* seg_off;
  int64_t nseg, seglen;
  const int64_t* ranges;  // nranges pairs [first, last), each inside one output row
  int64_t nranges;
  const uint8_t* keep;  // per position, 0 or 1; may be read up to 8 bytes past a range
  const float* partial;
  const float* res;  // null when the layer has no residual
  float* y;
  float bias, clip_max;
};

struct Kernels {
  const char* name;
  int rows;   // outputs per dense block (the largest nrows `dense` accepts)
  int cols;   // positions (slots) per dense block
  int group;  // positions per sparse call (the largest count `sparse` accepts)

  // dot[r][s] = sum_l w[r][l] * x[off[l] + s] for r < nrows, s < cols, finished into
  // `out` as DenseOut says.
  void (*dense)(const float* x, const int64_t* off, int64_t length, const float* const* w, int nrows,
                const DenseOut& out);

  // Finishes the kept positions of one output in the given position ranges:
  // y[p] = act(partial[p] + dot + (bias + res[p])) with dot the tail weights times the
  // patch of p, `group` positions at a time.
  void (*sparse)(const SparseJob& job);

  // dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols.
  void (*transpose)(const float* src, int64_t ss, int64_t rows, int64_t cols, float* dst, int64_t ds);

  // The pruning rule (kernel_util.h) for n outputs of one channel sharing `bias`:
  // keep[i] = !Pruned(bias + res[i], ratio, partial[i], threshold) (res may be null,
  // then base = bias); y[i] = 0 where pruned, untouched where kept. Returns the kept
  // count. Evaluated exactly as the scalar rule (float64, no contraction).
  int64_t (*decide)(const float* partial, const float* res, float bias, double ratio, double threshold, int64_t n,
                    float* y, uint8_t* keep);

  // The same for the StatsTest rule: keep[i] = !StatsPruned(bias + res[i], partial[i],
  // partial_sq[i], t_k, t_n, z_crit) (kernel_util.h), the same decisions (most of them
  // reached without the divisions, see conv_tail_impl.h).
  int64_t (*decide_stats)(const float* partial, const float* partial_sq, const float* res, float bias, double t_k,
                          double t_n, double z_crit, int64_t n, float* y, uint8_t* keep);

  // The same for the Certified rule: keep[i] = !CertifiedPruned(bias + res[i],
  // partial[i], xmax[i], xnorm[i], w_pos_sum, w_pos_norm) (kernel_util.h), with xmax
  // and xnorm the statistics of position i's receptive field (NaN: never pruned).
  int64_t (*decide_certified)(const float* partial, const float* res, float bias, float w_pos_sum, float w_pos_norm,
                              const float* xmax, const double* xnorm, int64_t n, float* y, uint8_t* keep);
};

// The best set this CPU runs. $EXPRUNE_CONV_KERNELS = generic | avx2 | avx512 forces
// one (for tests and benchmarks); a set the CPU or the build lacks falls back.
const Kernels& Select();

const Kernels& Generic();
const Kernels* Avx2();    // null when not built or not supported by this CPU
const Kernels* Avx512();  // likewise

}  // namespace conv_tail
}  // namespace exprune
