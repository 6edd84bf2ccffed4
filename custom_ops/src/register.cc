// The library's only exported symbol: onnxruntime calls it from
// SessionOptions.register_custom_ops_library() for every session options object.
#include <mutex>
#include <string>
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
// they live; it unloads the library only once no session options or session hold it. So
// each domain is kept here and released when the library's statics are destroyed (at that
// unload, or at exit), as onnxruntime's own test library and onnxruntime-extensions do:
// never releasing it left 120 bytes a registration that LeakSanitizer reported lost.
struct Domains {
  std::mutex lock;
  std::vector<OrtCustomOpDomain*> kept;
  const OrtApi* api = nullptr;
  ~Domains() {
    for (OrtCustomOpDomain* domain : kept) api->ReleaseCustomOpDomain(domain);
  }
};

void Keep(const OrtApi* api, OrtCustomOpDomain* domain) {
  static Domains domains;
  std::lock_guard<std::mutex> hold(domains.lock);
  domains.api = api;
  domains.kept.push_back(domain);
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
  if (OrtStatus* status = api->CreateCustomOpDomain(exprune::kDomain, &domain)) return status;
  OrtStatus* status = api->CustomOpDomain_Add(domain, &kDense);
  if (status == nullptr) status = api->CustomOpDomain_Add(domain, &kConv);
  if (status == nullptr) status = api->CustomOpDomain_Add(domain, &kHead);
  if (status == nullptr) status = api->CustomOpDomain_Add(domain, &kSparse);
  if (status == nullptr) status = api->CustomOpDomain_Add(domain, &kSparseConv);
  if (status == nullptr) status = api->AddCustomOpDomain(options, domain);
  if (status != nullptr) {
    api->ReleaseCustomOpDomain(domain);
    return status;
  }
  try {
    Keep(api, domain);
  } catch (...) {  // (out of memory: the domain is never released, which is all it costs)
  }
  return nullptr;
}
