// The custom-op domain, its version and the op names. exprune_onnx/ops.py holds the
// same values for the Python side; tests/test_custom_op.py checks that they agree.
#pragma once

namespace exprune {

inline constexpr const char* kDomain = "ai.exprune";
inline constexpr int kDomainVersion = 1;

inline constexpr const char* kDenseReluOp = "ExPruneDenseRelu";
inline constexpr const char* kConvReluOp = "ExPruneConvRelu";
inline constexpr const char* kArgmaxHeadOp = "ExPruneArgmaxHead";
inline constexpr const char* kSparseMatMulOp = "ExPruneSparseMatMul";
inline constexpr const char* kSparseConvOp = "ExPruneSparseConv";

}  // namespace exprune
