#include "argmax_head.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>
#include <vector>

#include "dot.h"

namespace exprune {

namespace {

// Multiply-adds per pool task if every class were finished.
constexpr int64_t kTaskWork = 32768;

// Whether class j is out of contention against the leader `top` (docs/custom_ops.md,
// "ExPruneArgmaxHead"). NaN never excludes.
bool Excluded(const PruneAttrs& a, double est_j, double est_top, float p_j, float p_top, float sq_j, float sq_top,
              float b_j, float b_top, double t_k, double t_n) {
  if (a.rule == Rule::kThreshold) return est_j - est_top < static_cast<double>(a.threshold);
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const double mean = (static_cast<double>(p_j) - static_cast<double>(p_top)) / t_k;
  const double m = mean + (static_cast<double>(b_j) - static_cast<double>(b_top)) / t_n;
  const double v = (static_cast<double>(sq_j) + static_cast<double>(sq_top)) / t_k - mean * mean;
  const double z_var = m / std::sqrt((v > 0.0 ? v : 1.0) / t_k);
  const double z_sign = m < 0.0 ? -kInf : (m > 0.0 ? kInf : m * 0.0);
  const double z = v > 0.0 ? z_var : z_sign;
  return z < static_cast<double>(a.z_crit) && v == v;
}

// One call's operands: partial [rows][C], h [rows][n], w_tail [C][n-k], bias [C].
struct HeadArgs {
  const PruneAttrs& attrs;
  const float* partial;
  const float* partial_sq;  // statstest: partial's shape, else null
  const float* h;
  const float* w;
  const float* bias;
  int64_t classes, n, k;
  bool can_decide;
  double ratio, t_k, t_n;
};

// Rows m0 .. m1: y[m] = the arg-max class, each row decided from its partial sums
// when only one class stays in contention, else finished over the classes that do.
// Returns the number of classes whose tail was skipped.
int64_t HeadRows(const HeadArgs& a, int64_t m0, int64_t m1, int64_t* y) {
  const int64_t classes = a.classes, n = a.n, k = a.k, tail = n - k;
  std::vector<double> est(static_cast<size_t>(classes));
  std::vector<int64_t> alive;
  alive.reserve(static_cast<size_t>(classes));
  int64_t count = 0;
  for (int64_t m = m0; m < m1; ++m) {
    const float* p = a.partial + m * classes;
    const float* sq = a.partial_sq != nullptr ? a.partial_sq + m * classes : nullptr;
    alive.clear();
    if (a.can_decide) {
      int64_t top = 0;
      for (int64_t j = 0; j < classes; ++j) {
        est[j] = static_cast<double>(a.bias[j]) + a.ratio * static_cast<double>(p[j]);
        if (est[j] > est[top]) top = j;
      }
      for (int64_t j = 0; j < classes; ++j) {
        const bool out = j != top && Excluded(a.attrs, est[j], est[top], p[j], p[top], sq ? sq[j] : 0.0f,
                                              sq ? sq[top] : 0.0f, a.bias[j], a.bias[top], a.t_k, a.t_n);
        if (!out) alive.push_back(j);
      }
      if (alive.size() == 1) {  // decided: nothing of the tail is computed
        y[m] = top;
        count += classes;
        continue;
      }
    } else {
      alive.resize(static_cast<size_t>(classes));
      std::iota(alive.begin(), alive.end(), int64_t{0});
    }
    const float* h_tail = a.h + m * n + k;
    int64_t best = -1;
    float best_z = 0.0f;
    for (int64_t j : alive) {
      const float z = p[j] + Dot(h_tail, a.w + j * tail, tail) + a.bias[j];
      if (best < 0 || z > best_z) {  // ties keep the lowest index, as ArgMax does
        best = j;
        best_z = z;
      }
    }
    y[m] = best;
    count += classes - static_cast<int64_t>(alive.size());
  }
  return count;
}

}  // namespace

ArgmaxHeadKernel::ArgmaxHeadKernel(const OrtKernelInfo* info, std::string label) : PruneKernel(info, std::move(label)) {
  if (attrs_.rule == Rule::kCertified) throw OpError("rule certified is not defined for the arg-max head");
  if (!attrs_.thresholds.empty()) throw OpError("attribute thresholds is not defined for the arg-max head");
  int64_t keepdims = 0;
  if (ReadAttr(info, "keepdims", &keepdims) && keepdims != 0 && keepdims != 1) {
    throw OpError("attribute keepdims = " + std::to_string(keepdims) + " must be 0 or 1");
  }
  keepdims_ = keepdims == 1;
}

void ArgmaxHeadKernel::Compute(OrtKernelContext* context) const {
  Ort::KernelContext ctx(context);
  const Input partial = GetInput(ctx, 0, "partial", false);
  const Input h = GetInput(ctx, 1, "h", false);
  const Input w = GetInput(ctx, 2, "w_tail", false);
  const Input bias = GetInput(ctx, 3, "bias", false);
  if (GetInput(ctx, 4, "residual", true).present) throw OpError("input 4 (residual) must be absent for a head");

  const size_t rank = partial.shape.size();
  if (rank < 2) {
    throw OpError("partial must have shape [*, C] with at least one leading dimension, got " +
                  ShapeText(partial.shape));
  }
  if (h.shape.size() != rank || !std::equal(partial.shape.begin(), partial.shape.end() - 1, h.shape.begin())) {
    throw OpError("h must have the leading dimensions of partial " + ShapeText(partial.shape) +
                  " and shape [*, n], got " + ShapeText(h.shape));
  }
  const int64_t classes = partial.shape[rank - 1], n = h.shape[rank - 1], k = attrs_.k;
  if (classes < 1) throw OpError("partial has no classes: shape " + ShapeText(partial.shape));
  if (k >= n) {
    throw OpError("attribute k = " + std::to_string(k) + " must be < n = " + std::to_string(n) +
                  " (the last dimension of h)");
  }
  const int64_t tail = n - k;
  if (w.shape != std::vector<int64_t>{classes, tail}) {
    throw OpError("w_tail must have shape [C, n-k] = " + ShapeText({classes, tail}) + ", got " + ShapeText(w.shape));
  }
  if (bias.shape != std::vector<int64_t>{classes}) {
    throw OpError("bias must have shape [C] = " + ShapeText({classes}) + ", got " + ShapeText(bias.shape));
  }
  const RuleInputs extra = GetRuleInputs(ctx, attrs_.rule, partial.shape, classes);

  std::vector<int64_t> out_shape(partial.shape.begin(), partial.shape.end() - 1);
  if (keepdims_) out_shape.push_back(1);
  const int64_t rows = ElementCount(std::vector<int64_t>(partial.shape.begin(), partial.shape.end() - 1));
  auto index = ctx.GetOutput(0, out_shape);
  int64_t* y = index.GetTensorMutableData<int64_t>();
  int64_t* stats = nullptr;
  if (ctx.GetOutputCount() > 1) {
    const int64_t stats_shape[1] = {2};
    auto s = ctx.GetOutput(1, stats_shape, 1);
    if (static_cast<OrtValue*>(s) != nullptr) stats = s.GetTensorMutableData<int64_t>();
  }

  const HeadArgs args{attrs_,
                      partial.data,
                      extra.partial_sq,
                      h.data,
                      w.data,
                      bias.data,
                      classes,
                      n,
                      k,
                      attrs_.CanPrune(),
                      static_cast<double>(n) / static_cast<double>(k),
                      static_cast<double>(k),
                      static_cast<double>(n)};
  const int64_t per_task = std::max<int64_t>(1, kTaskWork / std::max<int64_t>(classes * tail, 1));
  const size_t tasks = static_cast<size_t>(rows > 0 ? CeilDiv(rows, per_task) : 0);
  std::vector<int64_t> skipped(tasks, 0);
  auto body = [&](size_t task) noexcept {
    const int64_t m0 = static_cast<int64_t>(task) * per_task, m1 = std::min(rows, m0 + per_task);
    skipped[task] = HeadRows(args, m0, m1, y);
  };
  ParallelTasks(ctx, tasks, body);
  if (stats != nullptr) {
    stats[0] = std::accumulate(skipped.begin(), skipped.end(), int64_t{0});
    stats[1] = rows * classes;
  }
}

}  // namespace exprune
