// What both kernels share: the onnxruntime C++ API include, errors that become an
// OrtStatus naming the node, attribute and tensor access, the pruning rule, the
// activation and the thread-pool loop.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

// CreateKernelV2/KernelComputeV2 (1.16) and KernelContext_ParallelFor (1.17).
static_assert(ORT_API_VERSION >= 17, "the ExPrune ops need onnxruntime headers of version 1.17 or newer");

namespace exprune {

// Anything the op cannot handle; becomes an ORT_INVALID_ARGUMENT status.
struct OpError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "ExPruneDenseRelu node 'name'", for every message a kernel returns.
std::string NodeLabel(const char* op_name, const OrtKernelInfo* info);

// "<label>: <what>" as an onnxruntime status.
OrtStatusPtr ErrorStatus(OrtErrorCode code, const std::string& label, const char* what) noexcept;

// Runs fn and turns whatever it throws into a status prefixed with the label, so
// no exception reaches onnxruntime's C boundary.
template <typename F>
OrtStatusPtr Guarded(const std::string& label, F&& fn) noexcept {
  try {
    fn();
    return nullptr;
  } catch (const OpError& e) {
    return ErrorStatus(ORT_INVALID_ARGUMENT, label, e.what());
  } catch (const Ort::Exception& e) {
    return ErrorStatus(e.GetOrtErrorCode(), label, e.what());
  } catch (const std::bad_alloc&) {
    return ErrorStatus(ORT_FAIL, label, "out of memory");
  } catch (const std::exception& e) {
    return ErrorStatus(ORT_FAIL, label, e.what());
  } catch (...) {
    return ErrorStatus(ORT_FAIL, label, "unknown error");
  }
}

// ---------------------------------------------------------------- attributes

// Attribute readers: false when the attribute is absent. Present with another type
// is an error, so a typo in the model cannot silently turn into a default.
bool ReadAttr(const OrtKernelInfo* info, const char* name, int64_t* out);
bool ReadAttr(const OrtKernelInfo* info, const char* name, float* out);
bool ReadAttr(const OrtKernelInfo* info, const char* name, std::string* out);
bool ReadAttr(const OrtKernelInfo* info, const char* name, std::vector<int64_t>* out);
bool ReadAttr(const OrtKernelInfo* info, const char* name, std::vector<float>* out);

// The decision rules of docs/custom_ops.md ("Decision rules").
enum class Rule : uint8_t { kThreshold, kStatsTest, kCertified };

// k, threshold(s), clip_max, rule and z_crit, validated as far as possible without the
// inputs.
struct PruneAttrs {
  int64_t k = 0;
  float threshold = 0.0f;
  std::vector<float> thresholds;  // per output, replacing `threshold` when not empty
  float clip_max = 0.0f;
  Rule rule = Rule::kThreshold;
  float z_crit = -std::numeric_limits<float>::infinity();

  // False when the rule's parameter disables pruning (threshold or z_crit = -inf).
  bool CanPrune() const {
    auto live = [](float t) { return !(std::isinf(t) && t < 0); };
    if (rule == Rule::kThreshold) {
      return thresholds.empty() ? live(threshold) : std::any_of(thresholds.begin(), thresholds.end(), live);
    }
    if (rule == Rule::kStatsTest) return !(std::isinf(z_crit) && z_crit < 0);
    return true;
  }
};
PruneAttrs ReadPruneAttrs(const OrtKernelInfo* info);

// Throws unless the per-output thresholds, when given, number `outs`.
void CheckThresholdCount(const PruneAttrs& a, int64_t outs);

// ---------------------------------------------------------------- tensors

struct Input {
  bool present = false;  // false only for an absent optional input
  const float* data = nullptr;
  std::vector<int64_t> shape;
  int64_t size = 0;
};

// Input `index` (called `name` in messages), which must be float32.
Input GetInput(const Ort::KernelContext& ctx, size_t index, const char* name, bool optional);

std::string ShapeText(const std::vector<int64_t>& shape);
int64_t ElementCount(const std::vector<int64_t>& shape);

// The inputs after `residual` that the node's rule reads (docs/custom_ops.md): null
// when the rule does not use them. Inputs the rule does not use are not looked at;
// those it uses must be present, float32 and of the documented shape, and for
// certified w_pos_sum and w_pos_norm must be >= 0 (the bound is not one otherwise).
struct RuleInputs {
  const float* partial_sq = nullptr;  // statstest: partial's shape
  const float* w_pos_sum = nullptr;   // certified: [O]
  const float* w_pos_norm = nullptr;  // certified: [O]
};
RuleInputs GetRuleInputs(const Ort::KernelContext& ctx, Rule rule, const std::vector<int64_t>& partial_shape,
                         int64_t outs);

// Allocates output 0 (y) and, if the node asks for it, output 1 (stats).
struct Outputs {
  float* y = nullptr;
  int64_t* stats = nullptr;
};
Outputs GetOutputs(const Ort::KernelContext& ctx, const std::vector<int64_t>& y_shape);

// ---------------------------------------------------------------- math

// est = base + (n/k) * partial in double: one rule for both ops, and the tests can
// reproduce it exactly in numpy float64. NaN never prunes.
inline bool Pruned(float base, double ratio, float partial, double threshold) {
  return static_cast<double>(base) + ratio * static_cast<double>(partial) < threshold;
}

// StatsTest (docs/custom_ops.md), t_k and t_n the terms of the partial and of the
// full sum; NaN in m or v never prunes. conv_tail_impl.h has a copy (StatsExact) that
// must round identically: keep the two in step.
inline bool StatsPruned(float base, float partial, float partial_sq, double t_k, double t_n, double z_crit) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const double mean = static_cast<double>(partial) / t_k;
  const double m = mean + static_cast<double>(base) / t_n;
  const double v = static_cast<double>(partial_sq) / t_k - mean * mean;
  const double z_var = m / std::sqrt((v > 0.0 ? v : 1.0) / t_k);
  const double z_sign = m < 0.0 ? -kInf : (m > 0.0 ? kInf : m * 0.0);  // m * 0: 0, or NaN for NaN
  const double z = v > 0.0 ? z_var : z_sign;
  return z < z_crit && v == v;
}

// min that returns NaN when either operand is NaN (numpy.minimum).
inline double MinNan(double a, double b) { return (a < b || a != a) ? a : b; }

// Certified (docs/custom_ops.md): xmax and xnorm are the statistics of the tail
// inputs the output reads, both NaN when one of those inputs is negative or NaN (then
// the bound is NaN and nothing is pruned).
inline bool CertifiedPruned(float base, float partial, float xmax, double xnorm, float w_pos_sum, float w_pos_norm) {
  const double bound =
      MinNan(static_cast<double>(xmax) * static_cast<double>(w_pos_sum), xnorm * static_cast<double>(w_pos_norm));
  return static_cast<double>(base) + static_cast<double>(partial) + bound < 0.0;
}

// The certified rule's statistics of n tail inputs: *xmax = max(0, x...), *xnorm =
// sqrt(sum x^2) in float64; both NaN when an input is negative or NaN.
void TailStats(const float* x, int64_t n, float* xmax, double* xnorm);

// min(max(v, 0), clip_max), written so that NaN passes through as it does in Relu.
inline float Activate(float v, float clip_max) {
  v = v < 0.0f ? 0.0f : v;
  return v > clip_max ? clip_max : v;
}

// Calls body(task) for task in [0, tasks) on onnxruntime's intra-op pool. body must
// not throw: it runs on the pool's threads.
template <typename F>
void ParallelTasks(const Ort::KernelContext& ctx, size_t tasks, F& body) {
  if (tasks == 0) return;
  if (tasks == 1) {
    body(size_t{0});
    return;
  }
  ctx.ParallelFor([](void* p, size_t task) { (*static_cast<F*>(p))(task); }, tasks, 0, &body);
}

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// `bytes` of cache-line aligned storage, and its release (given the same size). Blocks of
// kMappedBytes and more (glibc's own first threshold, which it then raises to the largest
// block freed) are mapped from the system and unmapped when freed, so that what the ops
// free goes back to it at once: from glibc's heap, lists of tens of megabytes freed and
// made again by session after session left a service's resident size growing by megabytes
// a session (trial U; docs/custom_ops.md). Throws std::bad_alloc.
constexpr size_t kMappedBytes = size_t{128} << 10;
void* AllocateLines(size_t bytes);
void FreeLines(void* p, size_t bytes) noexcept;

// Cache-line aligned storage, so that vector loads do not straddle lines (the
// sparse kernels of conv_tail.h, the blocked weights of sparse_conv.cc).
template <typename T>
struct LineAligned {
  using value_type = T;
  LineAligned() = default;
  template <typename U>
  LineAligned(const LineAligned<U>&) {}
  T* allocate(size_t n) {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(AllocateLines(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { FreeLines(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const LineAligned<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const LineAligned<U>&) const {
    return false;
  }
};
template <typename T>
using AlignedVector = std::vector<T, LineAligned<T>>;
using AlignedFloats = AlignedVector<float>;

}  // namespace exprune
