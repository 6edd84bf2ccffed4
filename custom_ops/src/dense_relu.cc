#include "dense_relu.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "dot.h"

namespace exprune {

namespace {

// Rows of x handled together: each output's tail weights are read once per block.
constexpr int64_t kRowBlock = 16;
// Multiply-adds per pool task if nothing were pruned: large enough to hide the
// scheduling cost, small enough that batch 1 splits over the outputs.
constexpr int64_t kTaskWork = 32768;

}  // namespace

DenseReluKernel::DenseReluKernel(const OrtKernelInfo* info, std::string label)
    : label_(std::move(label)), attrs_(ReadPruneAttrs(info)) {}

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
  if (x.shape.size() != rank ||
      !std::equal(partial.shape.begin(), partial.shape.end() - 1, x.shape.begin())) {
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
  if (w.shape != std::vector<int64_t>{outs, tail}) {
    throw OpError("w_tail must have shape [O, n-k] = " + ShapeText({outs, tail}) + ", got " +
                  ShapeText(w.shape));
  }
  if (bias.shape != std::vector<int64_t>{outs}) {
    throw OpError("bias must have shape [O] = " + ShapeText({outs}) + ", got " + ShapeText(bias.shape));
  }
  if (res.present && res.shape != partial.shape) {
    throw OpError("residual must have the shape of partial " + ShapeText(partial.shape) + ", got " +
                  ShapeText(res.shape));
  }

  const int64_t rows = ElementCount(std::vector<int64_t>(partial.shape.begin(), partial.shape.end() - 1));
  const Outputs out = GetOutputs(ctx, partial.shape);

  const int64_t row_block = std::min(rows, kRowBlock);
  const int64_t row_blocks = row_block > 0 ? CeilDiv(rows, row_block) : 0;
  const int64_t col_block = outs > 0 ? std::clamp<int64_t>(CeilDiv(kTaskWork, row_block * tail + 1), 8, outs) : 0;
  const int64_t col_blocks = col_block > 0 ? CeilDiv(outs, col_block) : 0;
  const size_t tasks = static_cast<size_t>(row_blocks * col_blocks);
  std::vector<int64_t> pruned(tasks, 0);

  const double ratio = static_cast<double>(n) / static_cast<double>(k);
  const double threshold = attrs_.threshold;
  const float clip_max = attrs_.clip_max;
  auto body = [&](size_t task) noexcept {
    const int64_t t = static_cast<int64_t>(task);
    const int64_t m0 = (t % row_blocks) * row_block, m1 = std::min(rows, m0 + row_block);
    const int64_t o0 = (t / row_blocks) * col_block, o1 = std::min(outs, o0 + col_block);
    int64_t count = 0;
    for (int64_t o = o0; o < o1; ++o) {
      const float* w_o = w.data + o * tail;
      const float b = bias.data[o];
      for (int64_t m = m0; m < m1; ++m) {
        const int64_t i = m * outs + o;
        const float base = res.present ? b + res.data[i] : b;
        const float p = partial.data[i];
        if (Pruned(base, ratio, p, threshold)) {
          out.y[i] = 0.0f;
          ++count;
          continue;
        }
        out.y[i] = Activate(p + Dot(x.data + m * n + k, w_o, tail) + base, clip_max);
      }
    }
    pruned[task] = count;
  };
  ParallelTasks(ctx, tasks, body);

  if (out.stats != nullptr) {
    out.stats[0] = std::accumulate(pruned.begin(), pruned.end(), int64_t{0});
    out.stats[1] = rows * outs;
  }
}

}  // namespace exprune
