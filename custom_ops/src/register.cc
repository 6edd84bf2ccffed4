// The library's only exported symbol: onnxruntime calls it from
// SessionOptions.register_custom_ops_library() for every session options object.
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "argmax_head.h"
#include "conv_relu.h"
#include "dense_relu.h"
#include "domain.h"
#include "sparse_conv.h"
#include "sparse_matmul.h"

namespace {

// Stateless descriptions of the ops; they live as long as the library.
const exprune::DenseReluOp kDense;
const exprune::ConvReluOp kConv;
const exprune::ArgmaxHeadOp kHead;
const exprune::SparseMatMulOp kSparse;
const exprune::SparseConvOp kSparseConv;

// onnxruntime does not take ownership of a domain, and its sessions use it for as long as
// they live; it unloads the library only once no session options or session hold it. A
// domain is never changed once its ops are added, so one is made per onnxruntime (API
// table) and given to every session options registered after: a new domain per
// registration, kept until unload, left a small block in glibc's heap for every session a
// service made, and where such a block fell inside the hole a destroyed session left, the
// next session's activations no longer fitted there and the heap grew by their size
// (bench/session_churn.py: 1.5 GB after 120 sessions in 7 of 22 runs). The domains are
// released when the library's statics are destroyed (at that unload, or at exit), as
// onnxruntime's own test library and onnxruntime-extensions do.
struct Domains {
  std::mutex lock;
  std::vector<std::pair<const OrtApi*, OrtCustomOpDomain*>> made;
  ~Domains() {
    for (auto& [api, domain] : made) api->ReleaseCustomOpDomain(domain);
  }
};

OrtStatus* MakeDomain(const OrtApi* api, OrtCustomOpDomain** out) {
  OrtCustomOpDomain* domain = nullptr;
  if (OrtStatus* status = api->CreateCustomOpDomain(exprune::kDomain, &domain)) return status;
  OrtStatus* status = api->CustomOpDomain_Add(domain, &kDense);
  if (status == nullptr) status = api->CustomOpDomain_Add(domain, &kConv);
  if (status == nullptr) status = api->CustomOpDomain_Add(domain, &kHead);
  if (status == nullptr) status = api->CustomOpDomain_Add(domain, &kSparse);
  if (status == nullptr) status = api->CustomOpDomain_Add(domain, &kSparseConv);
  if (status != nullptr) {
    api->ReleaseCustomOpDomain(domain);
    return status;
  }
  *out = domain;
  return nullptr;
}

// This onnxruntime's domain, made on its first registration.
OrtStatus* SharedDomain(const OrtApi* api, OrtCustomOpDomain** out) {
  static Domains domains;
  std::lock_guard<std::mutex> hold(domains.lock);
  for (auto& [made_by, domain] : domains.made) {
    if (made_by == api) {
      *out = domain;
      return nullptr;
    }
  }
  OrtCustomOpDomain* domain = nullptr;
  if (OrtStatus* status = MakeDomain(api, &domain)) return status;
  try {
    domains.made.emplace_back(api, domain);
  } catch (...) {  // (out of memory: this registration's domain is never released, which is all it costs)
  }
  *out = domain;
  return nullptr;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // Version 1 of the API exists in every onnxruntime; it is enough to say why.
    const OrtApi* v1 = api_base->GetApi(1);
    if (v1 == nullptr) return nullptr;
    try {
      const std::string msg = std::string("the ExPrune custom-op library was built against onnxruntime API ") +
                              std::to_string(ORT_API_VERSION) + ", which onnxruntime " + api_base->GetVersionString() +
                              " does not provide; upgrade onnxruntime";
      return v1->CreateStatus(ORT_FAIL, msg.c_str());
    } catch (...) {
      return v1->CreateStatus(ORT_FAIL, "the ExPrune custom-op library needs a newer onnxruntime");
    }
  }
  Ort::InitApi(api);

  OrtCustomOpDomain* domain = nullptr;
  if (OrtStatus* status = SharedDomain(api, &domain)) return status;
  return api->AddCustomOpDomain(options, domain);
}
