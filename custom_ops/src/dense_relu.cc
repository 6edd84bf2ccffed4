#include "dense_relu.h"

#include <algorithm>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "dot.h"

namespace exprune {

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

}  // namespace

DenseReluKernel::DenseReluKernel(const OrtKernelInfo* info, std::string label) : PruneKernel(info, std::move(label)) {
  if (!ReadAttr(info, "tail_units", &tail_units_)) return;
  if (tail_units_.empty()) throw OpError("attribute tail_units is empty (leave it out instead)");
  // Checked once here; Compute only compares the largest unit with x's width.
  for (size_t j = 0; j < tail_units_.size(); ++j) {
    if (tail_units_[j] < 0) {
      throw OpError("attribute tail_units names unit " + std::to_string(tail_units_[j]) + " at position " +
                    std::to_string(j));
    }
    if (tail_units_[j] > tail_units_[largest_]) largest_ = j;
  }
}

void DenseReluKernel::Compute(OrtKernelContext* context) const {
  Ort::KernelContext ctx(context);
  const Input partial = GetInput(ctx, 0, "partial", false);
  const Input x = GetInput(ctx, 1, "x", false);
  const Input w = GetInput(ctx, 2, "w_tail", false);
  const Input bias = GetInput(ctx, 3, "bias", false);
  const Input res = GetInput(ctx, 4, "residual", true);

  const size_t rank = partial.shape.size();
  if (rank < 2) {
    throw OpError("partial must have shape [*, O] with at least one leading dimension, got " +
                  ShapeText(partial.shape));
  }
  if (x.shape.size() != rank || !std::equal(partial.shape.begin(), partial.shape.end() - 1, x.shape.begin())) {
    throw OpError("x must have the leading dimensions of partial " + ShapeText(partial.shape) +
                  " and shape [*, n], got " + ShapeText(x.shape));
  }
  const int64_t outs = partial.shape[rank - 1];
  const int64_t n = x.shape[rank - 1];
  const int64_t k = attrs_.k;
  if (k >= n) {
    throw OpError("attribute k = " + std::to_string(k) + " must be < n = " + std::to_string(n) +
                  " (the last dimension of x)");
  }
  const int64_t tail = n - k;
  if (!tail_units_.empty()) {
    if (static_cast<int64_t>(tail_units_.size()) != tail) {
      throw OpError("attribute tail_units has " + std::to_string(tail_units_.size()) +
                    " units, n - k = " + std::to_string(tail) + " expected");
    }
    if (tail_units_[largest_] >= n) {
      throw OpError("attribute tail_units names unit " + std::to_string(tail_units_[largest_]) + " at position " +
                    std::to_string(largest_) + ", outside x's " + std::to_string(n) + " units");
    }
  }
  if (w.shape != std::vector<int64_t>{outs, tail}) {
    throw OpError("w_tail must have shape [O, n-k] = " + ShapeText({outs, tail}) + ", got " + ShapeText(w.shape));
  }
  if (bias.shape != std::vector<int64_t>{outs}) {
    throw OpError("bias must have shape [O] = " + ShapeText({outs}) + ", got " + ShapeText(bias.shape));
  }
  if (res.present && res.shape != partial.shape) {
    throw OpError("residual must have the shape of partial " + ShapeText(partial.shape) + ", got " +
                  ShapeText(res.shape));
  }

  CheckThresholdCount(attrs_, outs);
  const RuleInputs extra = GetRuleInputs(ctx, attrs_.rule, partial.shape, outs);

  const int64_t rows = ElementCount(std::vector<int64_t>(partial.shape.begin(), partial.shape.end() - 1));
  const Outputs out = GetOutputs(ctx, partial.shape);

  // The tail inputs of row m are tail_x + m * x_stride, contiguous. With tail_units
  // they are gathered here, once per row: onnxruntime's Gather on the last axis copies
  // element by element (measured: 3.2 ms to permute 128 x 2048 floats, where a session
  // run that only copies them takes 0.07 ms).
  std::vector<float> gathered;
  const float* tail_x = x.data + k;
  int64_t x_stride = n;
  if (!tail_units_.empty() && rows > 0) {
    gathered.resize(static_cast<size_t>(rows * tail));
    const int64_t per_task = std::max<int64_t>(1, kTaskWork / tail);
    auto gather = [&](size_t task) noexcept {
      const int64_t m0 = static_cast<int64_t>(task) * per_task, m1 = std::min(rows, m0 + per_task);
      const int64_t* units = tail_units_.data();
      for (int64_t m = m0; m < m1; ++m) {
        const float* src = x.data + m * n;
        float* dst = gathered.data() + m * tail;
        for (int64_t j = 0; j < tail; ++j) dst[j] = src[units[j]];
      }
    };
    ParallelTasks(ctx, static_cast<size_t>(CeilDiv(rows, per_task)), gather);
    tail_x = gathered.data();
    x_stride = tail;
  }

  // Certified: the statistics of each row's tail inputs, shared by all outputs.
  std::vector<float> xmax;
  std::vector<double> xnorm;
  if (attrs_.rule == Rule::kCertified && rows > 0) {
    xmax.resize(static_cast<size_t>(rows));
    xnorm.resize(static_cast<size_t>(rows));
    const int64_t per_task = std::max<int64_t>(1, kTaskWork / std::max<int64_t>(tail, 1));
    auto stats = [&](size_t task) noexcept {
      const int64_t m0 = static_cast<int64_t>(task) * per_task, m1 = std::min(rows, m0 + per_task);
      for (int64_t m = m0; m < m1; ++m) TailStats(tail_x + m * x_stride, tail, &xmax[m], &xnorm[m]);
    };
    ParallelTasks(ctx, static_cast<size_t>(CeilDiv(rows, per_task)), stats);
  }

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

  const double ratio = static_cast<double>(n) / static_cast<double>(k);
  const double threshold = attrs_.threshold;
  const float* per_output = attrs_.thresholds.empty() ? nullptr : attrs_.thresholds.data();
  const double t_k = static_cast<double>(k), t_n = static_cast<double>(n), z_crit = attrs_.z_crit;
  const float clip_max = attrs_.clip_max;
  // Output o of row m, given the dot product of its tail.
  auto store = [&](int64_t m, int64_t o, float dot) noexcept {
    const int64_t i = m * outs + o;
    const float base = res.present ? bias.data[o] + res.data[i] : bias.data[o];
    out.y[i] = Activate(partial.data[i] + dot + base, clip_max);
  };
  // Finishes the surviving outputs idx[0..count) of row m, four at a time (DotGroup
  // shares the pass over the row's tail inputs and prefetches the next four weight
  // rows; a short group's prefetch repeats its last output).
  auto finish = [&](int64_t m, const int64_t* idx, int count) noexcept {
    const float* x_m = tail_x + m * x_stride;
    const float* groups[2][4];
    auto fill = [&](int g, int start) {
      for (int r = 0; r < 4; ++r) groups[g][r] = w.data + idx[std::min(start + r, count - 1)] * tail;
    };
    fill(0, 0);
    for (int start = 0; start < count; start += 4) {
      const int cur = (start / 4) % 2;
      const bool more = start + 4 < count;
      if (more) fill(1 - cur, start + 4);
      float dots[4];
      DotGroup(x_m, groups[cur], std::min(4, count - start), tail, dots, more ? groups[1 - cur] : nullptr);
      for (int r = 0; r < 4 && start + r < count; ++r) store(m, idx[start + r], dots[r]);
    }
  };
  // Rows sharing a surviving output, finished four at a time: DotGroup with the
  // output's weight row as the shared operand. Each value is the same sum, in the same
  // order, as DotGroup over the row's surviving outputs gives, since a lane never mixes
  // pairs and a product's operands commute exactly: a row's outputs do not depend on
  // the batch it came in.
  auto finish_rows = [&](int64_t o, const int64_t* rows_of, int count, const float* next_w) noexcept {
    const float* w_o = w.data + o * tail;
    const float* prefetch[4] = {next_w, next_w, next_w, next_w};
    for (int start = 0; start < count; start += 4) {
      const float* group[4];
      const int size = std::min(4, count - start);
      for (int r = 0; r < size; ++r) group[r] = tail_x + rows_of[start + r] * x_stride;
      float dots[4];
      DotGroup(w_o, group, size, tail, dots, next_w != nullptr && start + 4 >= count ? prefetch : nullptr);
      for (int r = 0; r < size; ++r) store(rows_of[start + r], o, dots[r]);
    }
  };
  // One copy of the loop per rule, so the threshold rule's stays as it was.
  auto run = [&](auto rule, size_t task) noexcept {
    constexpr Rule kRule = decltype(rule)::value;
    int64_t count = 0;
    // Decides output o of row m; a pruned one is written (0) and counted here.
    auto prune_at = [&](int64_t m, int64_t o) noexcept {
      const int64_t i = m * outs + o;
      const float base = res.present ? bias.data[o] + res.data[i] : bias.data[o];
      const float p = partial.data[i];
      bool prune;
      if constexpr (kRule == Rule::kThreshold) {
        prune = Pruned(base, ratio, p, per_output != nullptr ? static_cast<double>(per_output[o]) : threshold);
      } else if constexpr (kRule == Rule::kStatsTest) {
        prune = StatsPruned(base, p, extra.partial_sq[i], t_k, t_n, z_crit);
      } else {
        prune = CertifiedPruned(base, p, xmax[m], xnorm[m], extra.w_pos_sum[o], extra.w_pos_norm[o]);
      }
      if (prune) {
        out.y[i] = 0.0f;
        ++count;
      }
      return prune;
    };
    const int64_t t = static_cast<int64_t>(task);
    const int64_t m0 = (t % row_blocks) * row_block, m1 = std::min(rows, m0 + row_block);
    const int64_t o0 = (t / row_blocks) * col_block, o1 = std::min(outs, o0 + col_block);
    if (m1 - m0 == 1) {
      // One row: its x tail stays in cache across outputs; survivors are listed
      // kChunk at a time, then finished.
      const int64_t m = m0;
      int64_t idx[kChunk];
      int pending = 0;
      for (int64_t o = o0; o < o1; ++o) {
        if (prune_at(m, o)) continue;
        idx[pending++] = o;
        if (pending == kChunk) {
          finish(m, idx, pending);
          pending = 0;
        }
      }
      if (pending > 0) finish(m, idx, pending);
    } else {
      // Several rows: outputs outside, so each surviving output's weight row is read
      // once for the block; the block's x rows stay in cache.
      int64_t rows_of[kRowBlock];
      int64_t prev = -1;
      int prev_count = 0;
      int64_t prev_rows[kRowBlock];
      for (int64_t o = o0; o < o1; ++o) {
        int live = 0;
        for (int64_t m = m0; m < m1; ++m) {
          if (!prune_at(m, o)) rows_of[live++] = m;
        }
        if (live == 0) continue;
        // The previous output is finished now that the next one's row is known, so
        // its last group can prefetch it.
        if (prev_count > 0) finish_rows(prev, prev_rows, prev_count, w.data + o * tail);
        prev = o;
        prev_count = live;
        std::copy(rows_of, rows_of + live, prev_rows);
      }
      if (prev_count > 0) finish_rows(prev, prev_rows, prev_count, nullptr);
    }
    pruned[task] = count;
  };
  auto body = [&](size_t task) noexcept {
    switch (attrs_.rule) {
      case Rule::kThreshold:
        return run(std::integral_constant<Rule, Rule::kThreshold>{}, task);
      case Rule::kStatsTest:
        return run(std::integral_constant<Rule, Rule::kStatsTest>{}, task);
      case Rule::kCertified:
        return run(std::integral_constant<Rule, Rule::kCertified>{}, task);
    }
  };
  ParallelTasks(ctx, tasks, body);

  if (out.stats != nullptr) {
    out.stats[0] = std::accumulate(pruned.begin(), pruned.end(), int64_t{0});
    out.stats[1] = rows * outs;
  }
}

}  // namespace exprune
