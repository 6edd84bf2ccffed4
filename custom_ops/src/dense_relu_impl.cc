// ExPruneDenseRelu's stages (dense_relu_impl.h): gathering the tail inputs, the
// certified rule's row statistics, and deciding and finishing the outputs in tasks of
// a block of rows times a block of outputs.
#include "dense_relu_impl.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "dot.h"

namespace exprune {
namespace dense_relu {

namespace {

// Rows of x handled together by one task: with several rows, each surviving output's
// tail weights come from memory once per block and serve all its surviving rows there.
constexpr int64_t kRowBlock = 16;
// x rows of a block are reread for every output, so a block's rows should stay in L2.
constexpr int64_t kRowBlockBytes = 256 * 1024;
// Survivors listed per row before they are finished, four at a time.
constexpr int kChunk = 64;
// Outputs per task for one row: a task's first group of survivors has no group before
// it to prefetch its weight rows, so a task should hold many groups even when few of
// its outputs survive (measured: 256 beats 64 by 1-6 points of ideal at batch 1).
constexpr int64_t kOneRowColumns = 256;
// Multiply-adds per pool task if nothing were pruned: large enough to hide the
// scheduling cost, small enough that batch 1 splits over the outputs.
constexpr int64_t kTaskWork = 32768;

// Output o of row m, given the dot product of its tail.
inline void Store(const DenseArgs& a, int64_t m, int64_t o, float dot) {
  const int64_t i = m * a.outs + o;
  const float base = a.res != nullptr ? a.bias[o] + a.res[i] : a.bias[o];
  a.y[i] = Activate(a.partial[i] + dot + base, a.clip_max);
}

// Decides output o of row m; a pruned one is written (0) here. One copy per rule, so
// the threshold rule's loop stays as it was.
template <Rule kRule>
inline bool PruneAt(const DenseArgs& a, int64_t m, int64_t o) {
  const int64_t i = m * a.outs + o;
  const float base = a.res != nullptr ? a.bias[o] + a.res[i] : a.bias[o];
  const float p = a.partial[i];
  bool prune;
  if constexpr (kRule == Rule::kThreshold) {
    prune = Pruned(base, a.ratio, p, a.per_output != nullptr ? static_cast<double>(a.per_output[o]) : a.threshold);
  } else if constexpr (kRule == Rule::kStatsTest) {
    prune = StatsPruned(base, p, a.extra.partial_sq[i], a.t_k, a.t_n, a.z_crit);
  } else {
    prune = CertifiedPruned(base, p, a.xmax[m], a.xnorm[m], a.extra.w_pos_sum[o], a.extra.w_pos_norm[o]);
  }
  if (prune) a.y[i] = 0.0f;
  return prune;
}

// Finishes the surviving outputs idx[0..count) of row m, four at a time (DotGroup
// shares the pass over the row's tail inputs and prefetches the next four weight
// rows; a short group's prefetch repeats its last output).
void FinishRow(const DenseArgs& a, int64_t m, const int64_t* idx, int count) {
  const int64_t tail = a.tail;
  const float* x_m = a.tail_x + m * a.x_stride;
  const float* groups[2][4];
  auto fill = [&](int g, int start) {
    for (int r = 0; r < 4; ++r) groups[g][r] = a.w + idx[std::min(start + r, count - 1)] * tail;
  };
  fill(0, 0);
  for (int start = 0; start < count; start += 4) {
    const int cur = (start / 4) % 2;
    const bool more = start + 4 < count;
    if (more) fill(1 - cur, start + 4);
    float dots[4];
    DotGroup(x_m, groups[cur], std::min(4, count - start), tail, dots, more ? groups[1 - cur] : nullptr);
    for (int r = 0; r < 4 && start + r < count; ++r) Store(a, m, idx[start + r], dots[r]);
  }
}

// Rows sharing a surviving output, finished four at a time: DotGroup with the
// output's weight row as the shared operand. Each value is the same sum, in the same
// order, as DotGroup over the row's surviving outputs gives, since a lane never mixes
// pairs and a product's operands commute exactly: a row's outputs do not depend on
// the batch it came in.
void FinishOutput(const DenseArgs& a, int64_t o, const int64_t* rows_of, int count, const float* next_w) {
  const float* w_o = a.w + o * a.tail;
  const float* prefetch[4] = {next_w, next_w, next_w, next_w};
  for (int start = 0; start < count; start += 4) {
    const float* group[4];
    const int size = std::min(4, count - start);
    for (int r = 0; r < size; ++r) group[r] = a.tail_x + rows_of[start + r] * a.x_stride;
    float dots[4];
    DotGroup(w_o, group, size, a.tail, dots, next_w != nullptr && start + 4 >= count ? prefetch : nullptr);
    for (int r = 0; r < size; ++r) Store(a, rows_of[start + r], o, dots[r]);
  }
}

// One row: its x tail stays in cache across outputs; survivors are listed kChunk at
// a time, then finished. Returns the number pruned.
template <Rule kRule>
int64_t OneRow(const DenseArgs& a, int64_t m, int64_t o0, int64_t o1) {
  int64_t count = 0;
  int64_t idx[kChunk];
  int pending = 0;
  for (int64_t o = o0; o < o1; ++o) {
    if (PruneAt<kRule>(a, m, o)) {
      ++count;
      continue;
    }
    idx[pending++] = o;
    if (pending == kChunk) {
      FinishRow(a, m, idx, pending);
      pending = 0;
    }
  }
  if (pending > 0) FinishRow(a, m, idx, pending);
  return count;
}

// Several rows: outputs outside, so each surviving output's weight row is read once
// for the block; the block's x rows stay in cache. Returns the number pruned.
template <Rule kRule>
int64_t SeveralRows(const DenseArgs& a, int64_t m0, int64_t m1, int64_t o0, int64_t o1) {
  int64_t count = 0;
  int64_t rows_of[kRowBlock];
  int64_t prev = -1;
  int prev_count = 0;
  int64_t prev_rows[kRowBlock];
  for (int64_t o = o0; o < o1; ++o) {
    int live = 0;
    for (int64_t m = m0; m < m1; ++m) {
      if (!PruneAt<kRule>(a, m, o)) {
        rows_of[live++] = m;
      } else {
        ++count;
      }
    }
    if (live == 0) continue;
    // The previous output is finished now that the next one's row is known, so its
    // last group can prefetch it.
    if (prev_count > 0) FinishOutput(a, prev, prev_rows, prev_count, a.w + o * a.tail);
    prev = o;
    prev_count = live;
    std::copy(rows_of, rows_of + live, prev_rows);
  }
  if (prev_count > 0) FinishOutput(a, prev, prev_rows, prev_count, nullptr);
  return count;
}

template <Rule kRule>
int64_t Block(const DenseArgs& a, int64_t m0, int64_t m1, int64_t o0, int64_t o1) {
  return m1 - m0 == 1 ? OneRow<kRule>(a, m0, o0, o1) : SeveralRows<kRule>(a, m0, m1, o0, o1);
}

}  // namespace

void GatherTail(const Ort::KernelContext& ctx, const float* x, int64_t rows, int64_t n, const int64_t* units,
                int64_t tail, float* gathered) {
  const int64_t per_task = std::max<int64_t>(1, kTaskWork / tail);
  auto gather = [&](size_t task) noexcept {
    const int64_t m0 = static_cast<int64_t>(task) * per_task, m1 = std::min(rows, m0 + per_task);
    for (int64_t m = m0; m < m1; ++m) {
      const float* src = x + m * n;
      float* dst = gathered + m * tail;
      for (int64_t j = 0; j < tail; ++j) dst[j] = src[units[j]];
    }
  };
  ParallelTasks(ctx, static_cast<size_t>(CeilDiv(rows, per_task)), gather);
}

void RowTailStats(const Ort::KernelContext& ctx, const float* tail_x, int64_t x_stride, int64_t rows, int64_t tail,
                  float* xmax, double* xnorm) {
  const int64_t per_task = std::max<int64_t>(1, kTaskWork / std::max<int64_t>(tail, 1));
  auto stats = [&](size_t task) noexcept {
    const int64_t m0 = static_cast<int64_t>(task) * per_task, m1 = std::min(rows, m0 + per_task);
    for (int64_t m = m0; m < m1; ++m) TailStats(tail_x + m * x_stride, tail, &xmax[m], &xnorm[m]);
  };
  ParallelTasks(ctx, static_cast<size_t>(CeilDiv(rows, per_task)), stats);
}

// Tasks of a block of rows times a block of outputs.
int64_t FinishDense(const Ort::KernelContext& ctx, const DenseArgs& a) {
  const int64_t rows = a.rows, outs = a.outs, tail = a.tail;
  const int64_t row_block =
      std::min(rows, std::max<int64_t>(4, std::min(kRowBlock, kRowBlockBytes / (4 * std::max<int64_t>(tail, 1)))));
  const int64_t row_blocks = row_block > 0 ? CeilDiv(rows, row_block) : 0;
  // At least kChunk outputs per task, so that each row's survivors fill DotGroup's groups.
  const int64_t min_columns = row_block == 1 ? kOneRowColumns : kChunk;
  const int64_t col_block =
      outs > 0 ? std::clamp<int64_t>(CeilDiv(kTaskWork, row_block * tail + 1), std::min(min_columns, outs), outs) : 0;
  const int64_t col_blocks = col_block > 0 ? CeilDiv(outs, col_block) : 0;
  const size_t tasks = static_cast<size_t>(row_blocks * col_blocks);
  std::vector<int64_t> pruned(tasks, 0);

  auto body = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task);
    const int64_t m0 = (t % row_blocks) * row_block, m1 = std::min(rows, m0 + row_block);
    const int64_t o0 = (t / row_blocks) * col_block, o1 = std::min(outs, o0 + col_block);
    switch (a.rule) {
      case Rule::kThreshold:
        pruned[task] = Block<Rule::kThreshold>(a, m0, m1, o0, o1);
        break;
      case Rule::kStatsTest:
        pruned[task] = Block<Rule::kStatsTest>(a, m0, m1, o0, o1);
        break;
      case Rule::kCertified:
        pruned[task] = Block<Rule::kCertified>(a, m0, m1, o0, o1);
        break;
    }
  };
  ParallelTasks(ctx, tasks, body);
  return std::accumulate(pruned.begin(), pruned.end(), int64_t{0});
}

}  // namespace dense_relu
}  // namespace exprune
