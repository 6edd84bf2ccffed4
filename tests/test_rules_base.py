"""rules/base.py: the Rule object and the RuleSet the pipeline tries in order."""

from __future__ import annotations

import pytest

from exprune_onnx.rules import RULES
from exprune_onnx.rules.base import Rule, RuleSet


def _rule(name: str) -> Rule:
    return Rule(name, match=lambda node, ctx: None, check=lambda c, ctx: None, rewrite=lambda c, ctx: None)


def test_the_built_in_set_and_its_order():
    # quantized first (it only reports), argmax_head before the ReLU rules it lets through
    assert RULES.names == ["quantized", "runtime_fused", "conv_relu", "argmax_head", "gemm_relu", "matmul_relu"]
    assert len(RULES) == 6


def test_with_rule_adds_last_or_before_a_named_rule_and_leaves_the_set_alone():
    extra = _rule("extra")
    assert RULES.with_rule(extra).names[-1] == "extra"
    assert RULES.with_rule(extra, before="gemm_relu").names == [
        "quantized", "runtime_fused", "conv_relu", "argmax_head", "extra", "gemm_relu", "matmul_relu"]
    assert "extra" not in RULES.names


def test_bad_sets_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="two rules are named conv_relu"):
        RULES.with_rule(_rule("conv_relu"))
    with pytest.raises(ValueError, match="no rule named 'nope'"):
        RULES.with_rule(_rule("extra"), before="nope")
    with pytest.raises(ValueError, match="two rules are named a"):
        RuleSet([_rule("a"), _rule("b"), _rule("a")])
