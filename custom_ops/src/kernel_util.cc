#include "kernel_util.h"

#include <cmath>
#include <limits>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define EXPRUNE_MAPS 1
#endif
// Under AddressSanitizer and valgrind every block comes from the allocator, which they
// guard: a mapped block has no guard zones around it, and valgrind takes a fresh mapping
// for written (zeros), so overruns and reads of what a run never wrote would go unseen.
#if defined(__SANITIZE_ADDRESS__)
#undef EXPRUNE_MAPS
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#undef EXPRUNE_MAPS
#endif
#endif
#if defined(EXPRUNE_MAPS) && defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>  // RUNNING_ON_VALGRIND: a no-op outside valgrind
#define EXPRUNE_UNDER_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#endif
#endif
#ifndef EXPRUNE_UNDER_VALGRIND
#define EXPRUNE_UNDER_VALGRIND() false
#endif

namespace exprune {

namespace {
constexpr std::align_val_t kLine{64};
#if defined(EXPRUNE_MAPS)
// Decided once, so that every block is freed the way it was made.
bool Maps() {
  static const bool maps = !EXPRUNE_UNDER_VALGRIND();
  return maps;
}
#endif
}  // namespace

void* AllocateLines(size_t bytes) {
#if defined(EXPRUNE_MAPS)
  if (bytes >= kMappedBytes && Maps()) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return p;  // page aligned
  }
#endif
  return ::operator new(bytes, kLine);
}

void FreeLines(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
#if defined(EXPRUNE_MAPS)
  if (bytes >= kMappedBytes && Maps()) {
    munmap(p, bytes);
    return;
  }
#endif
  ::operator delete(p, kLine);
}

namespace {

// True if the call succeeded; a failure status is released, since absence is an
// answer here and not an error.
bool Ok(OrtStatus* status) {
  if (status == nullptr) return true;
  Ort::GetApi().ReleaseStatus(status);
  return false;
}

bool Present(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  int64_t i = 0;
  float f = 0.0f;
  size_t size = 0;
  return Ok(api.KernelInfoGetAttribute_int64(info, name, &i)) || Ok(api.KernelInfoGetAttribute_float(info, name, &f)) ||
         Ok(api.KernelInfoGetAttribute_string(info, name, nullptr, &size)) ||
         Ok(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size)) ||
         Ok(api.KernelInfoGetAttributeArray_float(info, name, nullptr, &size));
}

[[noreturn]] void WrongType(const char* name, const char* type) {
  throw OpError(std::string("attribute '") + name + "' must be of type " + type);
}

// `get` is the OrtApi's array getter for T: asked for the size first, then the values.
template <typename T, typename Getter>
bool ReadArray(const OrtKernelInfo* info, const char* name, std::vector<T>* out, Getter get, const char* type) {
  size_t size = 0;
  if (!Ok(get(info, name, nullptr, &size))) {
    if (Present(info, name)) WrongType(name, type);
    return false;
  }
  std::vector<T> value(size);
  if (size > 0 && !Ok(get(info, name, value.data(), &size))) WrongType(name, type);
  *out = value;
  return true;
}

}  // namespace

OrtStatusPtr ErrorStatus(OrtErrorCode code, const std::string& label, const char* what) noexcept {
  const OrtApi& api = Ort::GetApi();
  try {
    return api.CreateStatus(code, (label + ": " + what).c_str());
  } catch (...) {  // the message itself could not be built
    return api.CreateStatus(code, what);
  }
}

std::string NodeLabel(const char* op_name, const OrtKernelInfo* info) {
  std::string name;
  try {
    name = Ort::ConstKernelInfo(info).GetNodeName();
  } catch (const Ort::Exception&) {
  }
  return std::string(op_name) + " node '" + (name.empty() ? "<unnamed>" : name) + "'";
}

bool ReadAttr(const OrtKernelInfo* info, const char* name, int64_t* out) {
  if (Ok(Ort::GetApi().KernelInfoGetAttribute_int64(info, name, out))) return true;
  if (Present(info, name)) WrongType(name, "int");
  return false;
}

bool ReadAttr(const OrtKernelInfo* info, const char* name, float* out) {
  if (Ok(Ort::GetApi().KernelInfoGetAttribute_float(info, name, out))) return true;
  if (Present(info, name)) WrongType(name, "float");
  return false;
}

bool ReadAttr(const OrtKernelInfo* info, const char* name, std::string* out) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  if (!Ok(api.KernelInfoGetAttribute_string(info, name, nullptr, &size))) {
    if (Present(info, name)) WrongType(name, "string");
    return false;
  }
  std::string value(size, '\0');
  if (!Ok(api.KernelInfoGetAttribute_string(info, name, value.data(), &size))) WrongType(name, "string");
  value.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
  *out = value;
  return true;
}

bool ReadAttr(const OrtKernelInfo* info, const char* name, std::vector<int64_t>* out) {
  return ReadArray(info, name, out, Ort::GetApi().KernelInfoGetAttributeArray_int64, "ints");
}

bool ReadAttr(const OrtKernelInfo* info, const char* name, std::vector<float>* out) {
  return ReadArray(info, name, out, Ort::GetApi().KernelInfoGetAttributeArray_float, "floats");
}

PruneAttrs ReadPruneAttrs(const OrtKernelInfo* info) {
  PruneAttrs a;
  if (!ReadAttr(info, "k", &a.k)) throw OpError("attribute 'k' (int) is required");
  if (a.k < 1) throw OpError("attribute k = " + std::to_string(a.k) + " must be >= 1");
  if (!ReadAttr(info, "threshold", &a.threshold)) {
    throw OpError("attribute 'threshold' (float) is required");
  }
  if (std::isnan(a.threshold)) throw OpError("attribute threshold is NaN");
  a.clip_max = std::numeric_limits<float>::infinity();
  if (ReadAttr(info, "clip_max", &a.clip_max) && !(a.clip_max >= 0.0f)) {
    throw OpError("attribute clip_max = " + std::to_string(a.clip_max) + " must be >= 0");
  }
  std::string rule = "threshold";
  ReadAttr(info, "rule", &rule);
  if (rule == "threshold") {
    a.rule = Rule::kThreshold;
  } else if (rule == "statstest") {
    a.rule = Rule::kStatsTest;
  } else if (rule == "certified") {
    a.rule = Rule::kCertified;
  } else {
    throw OpError("attribute rule = '" + rule + "' is not one of threshold, statstest, certified");
  }
  if (ReadAttr(info, "z_crit", &a.z_crit) && std::isnan(a.z_crit)) throw OpError("attribute z_crit is NaN");
  if (ReadAttr(info, "thresholds", &a.thresholds)) {
    if (a.rule != Rule::kThreshold) throw OpError("attribute thresholds goes with rule threshold, not '" + rule + "'");
    if (a.thresholds.empty()) throw OpError("attribute thresholds is empty (leave it out instead)");
    for (size_t o = 0; o < a.thresholds.size(); ++o) {
      if (std::isnan(a.thresholds[o])) throw OpError("attribute thresholds is NaN at output " + std::to_string(o));
    }
  }
  return a;
}

void CheckThresholdCount(const PruneAttrs& a, int64_t outs) {
  if (!a.thresholds.empty() && static_cast<int64_t>(a.thresholds.size()) != outs) {
    throw OpError("attribute thresholds has " + std::to_string(a.thresholds.size()) + " values for " +
                  std::to_string(outs) + " outputs");
  }
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t ElementCount(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Input GetInput(const Ort::KernelContext& ctx, size_t index, const char* name, bool optional) {
  Input in;
  const std::string what = "input " + std::to_string(index) + " (" + name + ")";
  Ort::ConstValue value{nullptr};
  if (index < ctx.GetInputCount()) value = ctx.GetInput(index);
  if (static_cast<const OrtValue*>(value) == nullptr) {
    if (optional) return in;
    throw OpError(what + " is missing");
  }
  if (!value.IsTensor()) throw OpError(what + " must be a tensor");
  auto info = value.GetTensorTypeAndShapeInfo();
  if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
    throw OpError(what + " must be float32, got ONNX element type " +
                  std::to_string(static_cast<int>(info.GetElementType())));
  }
  in.present = true;
  in.shape = info.GetShape();
  in.size = ElementCount(in.shape);
  in.data = value.GetTensorData<float>();
  return in;
}

RuleInputs GetRuleInputs(const Ort::KernelContext& ctx, Rule rule, const std::vector<int64_t>& partial_shape,
                         int64_t outs) {
  RuleInputs r;
  if (rule == Rule::kStatsTest) {
    const Input sq = GetInput(ctx, 5, "partial_sq", true);
    if (!sq.present) throw OpError("rule statstest needs input 5 (partial_sq), which is missing");
    if (sq.shape != partial_shape) {
      throw OpError("input 5 (partial_sq) must have the shape of partial " + ShapeText(partial_shape) + ", got " +
                    ShapeText(sq.shape));
    }
    r.partial_sq = sq.data;
  } else if (rule == Rule::kCertified) {
    const char* names[2] = {"w_pos_sum", "w_pos_norm"};
    const float** dst[2] = {&r.w_pos_sum, &r.w_pos_norm};
    for (size_t j = 0; j < 2; ++j) {
      const std::string what = "input " + std::to_string(6 + j) + " (" + names[j] + ")";
      const Input in = GetInput(ctx, 6 + j, names[j], true);
      if (!in.present) throw OpError("rule certified needs " + what + ", which is missing");
      if (in.shape != std::vector<int64_t>{outs}) {
        throw OpError(what + " must have shape [O] = " + ShapeText({outs}) + ", got " + ShapeText(in.shape));
      }
      for (int64_t o = 0; o < outs; ++o) {
        if (!(in.data[o] >= 0.0f)) {
          throw OpError(what + " must be >= 0 (it sums positive weights), got " + std::to_string(in.data[o]) +
                        " at output " + std::to_string(o));
        }
      }
      *dst[j] = in.data;
    }
  }
  return r;
}

void TailStats(const float* x, int64_t n, float* xmax, double* xnorm) {
  // Independent lanes, folded in a fixed order: vectorisable without reassociation.
  constexpr int kLanes = 8;
  double sq[kLanes] = {};
  float mx[kLanes] = {};
  uint8_t bad[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      const float v = x[i + j];
      bad[j] |= !(v >= 0.0f);
      mx[j] = v > mx[j] ? v : mx[j];
      sq[j] += static_cast<double>(v) * static_cast<double>(v);
    }
  }
  for (int j = 0; i < n; ++i, ++j) {
    const float v = x[i];
    bad[j] |= !(v >= 0.0f);
    mx[j] = v > mx[j] ? v : mx[j];
    sq[j] += static_cast<double>(v) * static_cast<double>(v);
  }
  double s = 0.0;
  float m = 0.0f;
  bool any_bad = false;
  for (int j = 0; j < kLanes; ++j) {
    s += sq[j];
    m = mx[j] > m ? mx[j] : m;
    any_bad |= bad[j] != 0;
  }
  if (any_bad) {
    *xmax = std::numeric_limits<float>::quiet_NaN();
    *xnorm = std::numeric_limits<double>::quiet_NaN();
  } else {
    *xmax = m;
    *xnorm = std::sqrt(s);
  }
}

Outputs GetOutputs(const Ort::KernelContext& ctx, const std::vector<int64_t>& y_shape) {
  Outputs out;
  auto y = ctx.GetOutput(0, y_shape);
  out.y = y.GetTensorMutableData<float>();
  if (ctx.GetOutputCount() > 1) {
    const int64_t stats_shape[1] = {2};
    auto stats = ctx.GetOutput(1, stats_shape, 1);
    if (static_cast<OrtValue*>(stats) != nullptr) out.stats = stats.GetTensorMutableData<int64_t>();
  }
  return out;
}

}  // namespace exprune
