"""api.py (optimize_model, inspect_model, optimize): the Python entry points check what the
command line's types check, and raise the library's own errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import exprune_onnx
from exprune_onnx.errors import ConfigError, DataError, ModelLoadError

EXAMPLE = Path(__file__).resolve().parent.parent / "models" / "fashion_cnn.onnx"
SLICE = EXAMPLE.with_name("fashion_test_slice.npz")


@pytest.fixture(scope="module")
def model():
    return onnx.load(EXAMPLE)


@pytest.mark.parametrize(("option", "words"), [
    ({"threshold": float("nan")}, "threshold must be a number"),  # onnxruntime refused the written op
    ({"threshold": float("inf")}, "+inf prunes every output"),  # a trial's: every answer lost, only warned of
    ({"threshold": "abc"}, "threshold must be a number"),
    ({"threshold": "-2"}, "threshold must be a number, got '-2'"),  # taken as -2.0, where max_drop='0.01' was refused
    ({"threshold": [0.0]}, "threshold must be a number"),
    ({"k": [3]}, "k must be 'auto'"),
    ({"min_units": "x"}, "min_units must be a whole number"),
    ({"min_units": 1}, "min_units must be a whole number >= 2"),  # as --min-units
    ({"alpha": 3}, "alpha must be a number in [0, 0.5)"),
    ({"rule": "magic"}, "rule must be one of"),
    ({"unit_order": "random"}, "unit_order must be one of"),
    ({"argmax_only": "logits"}, "argmax_only must be a list"),
    ({"include_first_layer": "yes"}, "include_first_layer must be True or False"),
    # A config's entry given as a dict raised a bare AttributeError from the rules.
    ({"layers": {"/fc1/Gemm": {"skip": True}}}, "layers['/fc1/Gemm'] must be a LayerSetting, got dict; config= takes"),
    ({"input_shapes": [1]}, "input_shapes must be"),  # an AttributeError or TypeError from the compiler
])
@pytest.mark.parametrize("entry", ["optimize_model", "inspect_model", "optimize"])
def test_bad_options_are_a_config_error(model, option, words, entry):
    run = getattr(exprune_onnx, entry)
    extra = {"check": False, "objective": "flops"} if entry == "optimize" else {}
    with pytest.raises(ConfigError, match=re.escape(words)):
        run(model, **option, **extra)


@pytest.mark.parametrize(("setting", "words"), [
    ({"metric": "acc"}, "metric must be one of"),  # scored 0.0 and returned the original
    ({"granularity": "x"}, "granularity must be one of"),
    ({"max_drop": 2.0}, "max_drop must be a number in [0, 1]"),
    ({"max_drop": 5}, "got 5: the budget is a fraction (0.01 is one point), so a drop of 5 points is 0.05"),
    ({"latency_threads": 2}, "latency_threads does nothing with objective flops: it times nothing"),
    ({"holdout": 1.0}, "holdout must be under 1"),
    ({"check_samples": 0}, "check_samples must be a whole number"),
    ({"latency_batch": 0}, "latency_batch must be a whole number >= 1"),  # timed empty batches
    ({"latency_batch": -3}, "latency_batch must be a whole number >= 1"),  # numpy's negative dimensions
    ({"seed": "abc"}, "seed must be a whole number >= 0"),
    ({"latency_threads": 100000}, "latency_threads must be at most"),  # each a real thread: 32,000 exhausted the system
    ({"check": "no"}, "check must be True or False"),
    ({"input_values": {"x": "a"}}, "input_values['x'] must be a number or (low, high)"),
    ({"input_values": {"x": (2, 1)}}, "input_values['x'] must be a number or (low, high)"),
    ({"input_shapes": {"x": (0, 4)}}, "input_shapes['x']: each dim must be a size (>= 1 for the first, >= 0 after"),
    ({"input_shapes": {"x": (1, -1)}}, "input_shapes['x']: each dim must be a size (>= 1 for the first, >= 0 after"),
    ({"input_shapes": {"x": "N,32"}}, "input_shapes['x']: each dim must be a size"),  # not a string
    # Wrong types escaped from pathlib, dataclasses and numpy as TypeError or AttributeError
    ({"check_data": 5}, "check_data must be a path or a dict of arrays, got int"),
    ({"calibration": np.zeros((2, 1, 28, 28), np.float32)}, "calibration must be a path or a dict of arrays"),
    ({"labels": 3, "calibration": "d.npz"}, "labels must be a path or an array of labels, got int"),
    ({"input_shapes": [1, 28]}, "input_shapes must be of type dict, got list"),
    ({"options": {"threshold": 1}}, "options must be of type Options, got dict"),
    ({"settings": {"check": False}}, "settings must be of type Settings, got dict"),
    ({"log": 5}, "log must be a progress hook (a function) or a logging.Logger, got int"),
])
def test_bad_settings_are_a_config_error(model, setting, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        exprune_onnx.optimize(model, objective="flops", **setting)


@pytest.mark.parametrize("setting", [{"max_drop": 0.01}, {"labels": np.zeros(4, np.int64)}, {"metric": "relerr"},
                                     {"holdout": 0.2}, {"granularity": "layer"}, {"confidence": 0.5}])
def test_calibration_s_settings_without_calibration_data_are_refused(model, setting):
    """As the command line refuses --max-drop without --calibration: the budget was ignored."""
    with pytest.raises(ConfigError, match=f"^no calibration data is given, and only calibration reads {next(iter(setting))}"):
        exprune_onnx.optimize(model, objective="flops", check=False, **setting)


def test_an_unset_threshold_prunes_nothing_from_every_entry(model, tmp_path):
    """As on the command line, where no --threshold, --config or --calibration is the lossless
    mode: Options(k=16) given whole pruned at the paper's 0, 97.7% -> 74.6% on a digits MLP."""
    inspected = exprune_onnx.inspect_model(model)
    assert inspected.rewritten and {rw.threshold for rw in inspected.rewritten} == {float("-inf")}
    # The compiler and the workflow's objective flops then leave them out: they would only add
    # their partial products (a trial's CNN ran 1.40x slower with them); a typed -inf keeps them.
    for result in (exprune_onnx.optimize_model(model), exprune_onnx.optimize_model(model, exprune_onnx.Options(k=16)),
                   exprune_onnx.optimize(model, options=exprune_onnx.Options(k=16), objective="flops", check=False).result):
        assert not result.rewritten and not result.changed
        assert any("prunes nothing at threshold -inf" in r.reason for r in result.rejected)
    typed = exprune_onnx.optimize_model(model, threshold=float("-inf"))
    assert typed.rewritten and {rw.threshold for rw in typed.rewritten} == {float("-inf")}
    paper = exprune_onnx.optimize_model(model, threshold=0.0)
    assert {rw.threshold for rw in paper.rewritten} == {0.0}
    # A config file prunes at the thresholds it names, and nowhere else: one that only sets a
    # k (or skips a layer) pruned every layer at the paper's 0 (a Keras user's, -2.1 points).
    config = tmp_path / "c.json"
    config.write_text('{"layers": {"/fc1/Gemm": {"k": 16}}}')
    options = exprune_onnx.config.load_config(config, exprune_onnx.Options())
    assert options.threshold is None and options.setting("/fc1/Gemm").threshold == float("-inf")
    assert not exprune_onnx.config.prunes(options)
    config.write_text('{"layers": {"/fc1/Gemm": {"threshold": -0.5}}}')
    options = exprune_onnx.config.load_config(config, exprune_onnx.Options())
    assert options.setting("/fc1/Gemm").threshold == -0.5 and options.setting("/fc2/Gemm").threshold == float("-inf")
    assert exprune_onnx.config.prunes(options)
    config.write_text('{"default": {"threshold": 0}}')
    assert exprune_onnx.config.load_config(config, exprune_onnx.Options()).threshold == 0.0


def test_labels_may_be_an_array_and_ragged_data_is_bad_data(model):
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28), dtype=np.float32)
    done = exprune_onnx.optimize(model, objective="flops", calibration={"input": x}, labels=rng.integers(0, 10, 64),
                                 max_drop=0.15, confidence=0)
    assert done.calibrated is not None and done.checked.accuracy is not None
    with pytest.raises(DataError, match="every input must be one rectangular array"):
        exprune_onnx.optimize(model, objective="flops", check_data={"input": [[1.0], [1.0, 2.0]]})


def test_an_input_value_may_be_one_number(model):
    """As --input-value NAME:VALUE: a number is a constant (it raised a bare TypeError)."""
    done = exprune_onnx.optimize(model, objective="flops", input_values={model.graph.input[0].name: 0.5},
                                 check_samples=4, threshold=float("-inf"))
    assert done.checked is not None and done.checked.samples == 4


@pytest.mark.parametrize("entry", ["optimize_model", "optimize"])
def test_a_model_given_in_memory_is_checked_as_a_file_is(entry):
    run = getattr(exprune_onnx, entry)
    with pytest.raises(ModelLoadError, match="no graph or no opset import"):
        run(onnx.ModelProto())
    broken = onnx.load(EXAMPLE)
    broken.graph.node[3].input[0] = "nowhere"
    with pytest.raises(ModelLoadError, match="fails the ONNX checker"):
        run(broken)
    with pytest.raises(ModelLoadError, match="expected an onnx.ModelProto or a path, got int"):
        run(5)


def test_a_model_in_memory_without_its_external_data_says_so(tmp_path):
    """onnx.load(..., load_external_data=False) leaves the weights in their file: the
    message named only a tensor holding 0 values."""
    onnx.save(onnx.load(EXAMPLE), tmp_path / "m.onnx", save_as_external_data=True, location="m.data",
              size_threshold=0)
    bare = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    with pytest.raises(ModelLoadError, match=r"is external data \('m.data'\) that was not loaded: give the model's path"):
        exprune_onnx.optimize_model(bare)
    assert exprune_onnx.optimize_model(tmp_path / "m.onnx", threshold=-1.0).changed


def test_numpy_scalars_are_numbers(model):
    import numpy as np

    res = exprune_onnx.optimize_model(model, threshold=np.float32(-1.0), min_units=np.int64(8), k=np.int64(4),
                                      alpha=np.float32(0.01))
    assert res.changed and all(r.k == 4 for r in res.rewritten)


def test_an_output_declared_without_a_shape_gets_the_inferred_one(tmp_path):
    """onnxruntime runs it (graph editors write it), but the checker refuses it, and would
    refuse what we write: the output takes the shape inference gives it, in the caller's
    model never, from a file or in memory; one inference cannot shape is still refused."""
    model = onnx.load(EXAMPLE)
    want = onnx.ValueInfoProto()
    want.CopyFrom(model.graph.output[0])
    model.graph.output[0].type.tensor_type.ClearField("shape")
    before = model.SerializeToString()
    for given in (model, tmp_path / "m.onnx"):
        onnx.save(model, tmp_path / "m.onnx")
        res = exprune_onnx.optimize_model(given, threshold=-2.0)
        assert res.changed and res.model.graph.output[0] == want
        onnx.checker.check_model(res.model)
    assert model.SerializeToString() == before and (tmp_path / "m.onnx").read_bytes() == before
    model.graph.node.append(helper.make_node("Mystery", [want.name], ["odd"], domain="com.example"))
    model.graph.output.append(helper.make_tensor_value_info("odd", TensorProto.FLOAT, None))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(ModelLoadError, match="'odd' is declared without a shape, which the ONNX checker refuses: "
                                             "declare"):
        exprune_onnx.optimize_model(model, threshold=-2.0)


@pytest.mark.parametrize("entry", ["optimize_model", "inspect_model", "optimize"])
def test_what_the_command_line_refuses_the_api_refuses_too(model, entry):
    """A threshold beside a config was overridden by its default without a word (the command
    line refuses the pair); options not an Options, and input_shapes naming no input, were a
    TypeError and nothing (an API trial's)."""
    run = getattr(exprune_onnx, entry)
    extra = {"check": False, "objective": "flops"} if entry == "optimize" else {}
    with pytest.raises(ConfigError, match="give threshold or config, not both"):
        run(model, threshold=-1.0, config={"default": {"threshold": -2.0}}, **extra)
    with pytest.raises(ConfigError, match="give threshold or config, not both"):
        run(model, threshold=-1.0, config={"layers": {}}, **extra)  # it pruned every layer the config left out
    with pytest.raises(ConfigError, match="options must be of type Options, got str"):
        if entry == "optimize":
            run(model, options="x", **extra)
        else:
            run(model, "x")
    with pytest.raises(DataError, match="names 'zz', which is not a model input"):
        run(model, input_shapes={"zz": (2,)}, **extra)


def test_a_threshold_beside_calibration_is_refused_as_the_command_line_refuses_it(model, tmp_path):
    """The calibration chooses the thresholds: optimize took threshold=0.0 beside it and
    ignored it without a word (a docs trial's, from cli.md's own example)."""
    data = tmp_path / "d.npz"
    np.savez(data, input=np.random.default_rng(0).random((40, 1, 28, 28), dtype=np.float32),
             labels=np.arange(40) % 10)
    with pytest.raises(ConfigError, match="give threshold or calibration, not both"):
        exprune_onnx.optimize(model, threshold=0.0, calibration=data, confidence=0, objective="flops")


def test_messages_name_the_keywords_the_api_takes(model, tmp_path):
    """A trial's Python caller read "--max-drop 0 cannot be certified ... or --confidence 0",
    options it has no way to give: the messages name max_drop and confidence."""
    from exprune_onnx.errors import ExPruneError, in_keywords

    data = tmp_path / "d.npz"
    np.savez(data, input=np.random.default_rng(0).random((40, 1, 28, 28), dtype=np.float32),
             labels=np.arange(40) % 10)
    with pytest.raises(ExPruneError) as caught:
        exprune_onnx.optimize(model, calibration=data, max_drop=0.0, objective="flops")
    assert "--" not in str(caught.value) and "max_drop" in str(caught.value), caught.value
    with pytest.raises(DataError, match=r"^input_shapes/input_values names 'nope'"):
        exprune_onnx.optimize(model, objective="flops", input_shapes={"nope": (1, 2)})
    # Only options that are keywords, and not a hyphenated word; a message naming none is kept.
    plain = ConfigError("see --explain, or give --check-data, --no-check or a well-known input")
    assert str(in_keywords(plain, {"check_data"}, {"no-check": "check=False"})) == (
        "see --explain, or give check_data, check=False or a well-known input")
    none = DataError("no option here")
    assert in_keywords(none, {"x"}, {}) is none


def test_an_unchanged_result_is_a_copy_of_the_caller_s_model(model):
    """A pipeline that stamps metadata on the result edited its input model with it."""
    given = onnx.load(EXAMPLE)
    done = exprune_onnx.optimize(given, objective="flops", check=False)
    assert not done.changed and done.model is not given and done.model == given
    done.model.graph.node[0].name = "stamped"
    assert given.graph.node[0].name != "stamped"


def test_a_result_pickles_without_the_compiler_s_objects(model):
    """A spawn pool's parent waited forever for a worker's Optimized it could not unpickle."""
    import pickle

    x = {"input": np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)}
    done = exprune_onnx.optimize(model, objective="flops", threshold=-1.0, check_data=x)
    back = pickle.loads(pickle.dumps(done))
    assert back.model == done.model and back.report == done.report and back.rows == done.rows
    assert back.changed and back.result is back.checked is back.calibrated is back.timed is None
    assert done.result is not None  # the original keeps them


def test_a_config_may_be_given_as_a_dict_or_a_path(model, tmp_path):
    """As --config reads a file; the caller's Options are left as they were."""
    content = {"default": {"threshold": -1.0}, "layers": {"/fc1/Gemm": {"skip": True}}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(content))
    options = exprune_onnx.Options()
    results = [exprune_onnx.optimize(model, options=options, config=given, objective="flops", check=False).model
               for given in (content, path)]
    assert results[0] == results[1] and options.layers == {} and options.threshold is None
    compiled = exprune_onnx.optimize_model(model, config=content)
    assert compiled.model == results[0]
    assert "/fc1/Gemm" not in {rw.candidate.layer for rw in compiled.rewritten} and compiled.rewritten
    with pytest.raises(ConfigError, match="config: its default k 16 and k 8 disagree"):
        exprune_onnx.optimize_model(model, k=8, config={"default": {"k": 16}})
    with pytest.raises(ConfigError, match="config must be a JSON config's path or its content \\(a dict or JSON text\\), got int"):
        exprune_onnx.optimize(model, config=3)


def test_the_progress_hook_may_take_the_text_alone_or_be_a_logger(model, caplog):
    import logging

    seen = []
    rng = np.random.default_rng(0)
    # Calibration's steps, not timings that noise may add to: the same steps each run.
    given = {"objective": "flops", "check": False, "max_drop": 0.15, "confidence": 0,
             "calibration": {"input": rng.random((40, 1, 28, 28), dtype=np.float32), "labels": np.arange(40) % 10}}
    exprune_onnx.optimize(model, **given, log=lambda text: seen.append(text))
    assert seen and all(isinstance(t, str) for t in seen)
    caplog.set_level(logging.INFO, logger="exprune-test")
    exprune_onnx.optimize(model, **given, log=logging.getLogger("exprune-test"))
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == len(seen) and all(m.startswith(t) for m, t in zip(logged, seen))
    assert any(re.search(r" \(\d+/\d+\)$", m) for m in logged)  # a step's counts


def test_what_the_progress_hook_raises_reaches_the_caller_as_it_was(model):
    """A hook's ZeroDivisionError read 'onnxruntime cannot run the original model (division
    by zero)' from optimize, and a RuntimeError from the latency step (trial AH)."""
    def broken(text, done=None, total=None):
        raise ZeroDivisionError("the hook's own")

    data = {"input": np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)}
    for call in (lambda: exprune_onnx.optimize(model, threshold=0, objective="flops", log=broken),
                 lambda: exprune_onnx.optimize(model, check_data=data, log=broken),
                 lambda: exprune_onnx.verify_model(model, model, data=data, log=broken),
                 lambda: exprune_onnx.evaluate_model(model, model, data, runs=2, log=broken)):
        with pytest.raises(ZeroDivisionError, match="the hook's own"):
            call()

    def chained(text, done=None, total=None):
        try:
            {}["missing"]
        except KeyError as exc:
            raise ValueError("the hook's own") from exc

    with pytest.raises(ValueError, match="the hook's own") as raised:  # its cause kept (it was erased)
        exprune_onnx.optimize(model, threshold=0, objective="flops", log=chained)
    assert isinstance(raised.value.__cause__, KeyError) and not isinstance(raised.value.__context__,
                                                                            exprune_onnx.progress.HookRaised)


def test_graphsurgeon_s_warnings_are_off_in_our_calls_only(capsys):
    """Importing the package set onnx-graphsurgeon's logger to ERROR for the whole process (an
    API trial): a program's own graphsurgeon warnings vanished. Only our calls quiet it now."""
    import subprocess
    import sys

    import onnx_graphsurgeon as gs
    from helpers import init, make_model, vi

    code = ("import onnx_graphsurgeon as gs; before = gs.logger.G_LOGGER.severity; import exprune_onnx; "
            "print(before == gs.logger.G_LOGGER.severity)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"
    rng = np.random.default_rng(0)
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["m0"]), helper.make_node("Relu", ["m0"], ["h0"]),
             helper.make_node("MatMul", ["h0", "w1"], ["m1"]), helper.make_node("Softmax", ["m1"], ["p"]),
             helper.make_node("ZipMap", ["p"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    model = make_model(nodes, [vi("x", ["N", 16])], [helper.make_value_info("probabilities", maps)],
                       [init("w0", rng.normal(size=(16, 48)).astype(np.float32)),
                        init("w1", rng.normal(size=(48, 3)).astype(np.float32))], domains=["ai.onnx.ml"])
    severity = gs.logger.G_LOGGER.severity
    capsys.readouterr()
    gs.logger.G_LOGGER.once_logged.clear()  # (its warning prints once a process: an earlier test's may have)
    gs.export_onnx(gs.import_onnx(model))  # graphsurgeon warns of the map type, to a program of its own
    assert "[W]" in capsys.readouterr().out
    exprune_onnx.optimize_model(model, threshold=0.0)
    exprune_onnx.inspect_model(model)
    assert "[W]" not in capsys.readouterr().out and gs.logger.G_LOGGER.severity == severity


def test_calls_that_overlap_in_two_threads_give_graphsurgeon_s_level_back():
    """Call B starts inside call A and ends after it: each keeping its own level left ERROR
    behind (an API trial's)."""
    import threading

    import onnx_graphsurgeon as gs

    from exprune_onnx.compiler import quiet_graphsurgeon

    before = gs.logger.G_LOGGER.severity
    a_in, b_in = threading.Event(), threading.Event()
    seen = []  # (asserted here: an assert in a thread fails no test)

    @quiet_graphsurgeon
    def call_a():
        a_in.set()
        seen.append(("B started", b_in.wait(10)))

    @quiet_graphsurgeon
    def call_b():
        b_in.set()
        first.join(10)  # A has ended: B ends last
        seen.append(("A ended", not first.is_alive()))
        seen.append(("quiet while B runs", gs.logger.G_LOGGER.severity >= gs.logger.G_LOGGER.ERROR))

    first = threading.Thread(target=call_a)
    first.start()
    assert a_in.wait(10)
    second = threading.Thread(target=call_b)
    second.start()
    second.join(10)
    assert not second.is_alive() and seen == [("B started", True), ("A ended", True), ("quiet while B runs", True)]
    assert gs.logger.G_LOGGER.severity == before


def test_the_warnings_name_the_keywords_a_python_caller_sets():
    """optimize's warnings named --objective and the like, which a Python caller has not (an API trial)."""
    from helpers import three_layer_mlp

    done = exprune_onnx.optimize(three_layer_mlp(), threshold=0.0, objective="flops", check=False)
    said = " ".join(done.warnings)
    assert "objective flops keeps the rewrites" in said and "--objective" not in said
    assert done.report["warnings"] == done.warnings
    # The reasons a layer is left alone, too (an API trial's: "--include-first-layer overrides").
    for result in (exprune_onnx.inspect_model(EXAMPLE), exprune_onnx.optimize_model(EXAMPLE), done.result):
        reasons = [r.reason for r in result.rejected]
        assert reasons and not any("--" in r for r in reasons), reasons
    assert any("include_first_layer overrides" in r.reason for r in exprune_onnx.inspect_model(EXAMPLE).rejected)
    assert not any("--" in row["reason"] for row in done.report["rejected"])


def test_verify_model_checks_a_pair_as_the_command_does(model):
    """There was no Python verify (an API trial): the command's four rows, a failed check as
    passed == False, and the command's refusals as the library's errors."""
    with np.load(SLICE) as f:
        arrays = {"input": f["input"][:64], "labels": f["labels"][:64]}
    exact = exprune_onnx.optimize_model(model, threshold=float("-inf")).model
    done = exprune_onnx.verify_model(model, exact, data=arrays)
    assert done.passed and [r.check for r in done.rows] == ["structure", "weights", "exact at -inf", "agreement"]
    pruned = exprune_onnx.optimize_model(model, threshold=-2.0).model
    done = exprune_onnx.verify_model(EXAMPLE, pruned, data=arrays, min_agreement=0.999)
    assert not done.passed and [r.check for r in done.failed] == ["agreement"]
    assert exprune_onnx.verify_model(model, pruned, data=arrays, min_agreement=0.5).passed
    with pytest.raises(ConfigError, match="the original goes first"):
        exprune_onnx.verify_model(exact, model)
    with pytest.raises(ConfigError, match="labels go with data"):
        exprune_onnx.verify_model(model, exact, labels=np.zeros(4, np.int64))
    with pytest.raises(ConfigError, match="min_agreement must be a number in range"):
        exprune_onnx.verify_model(model, exact, min_agreement=2)
    # Each was a ValueError or TypeError from numpy or pathlib.
    for bad, words in (({"samples": 0}, "samples must be a whole number >= 1, got 0"),
                       ({"samples": "4"}, "samples must be a whole number >= 1, got '4'"),
                       ({"seed": -3}, "seed must be a whole number >= 0"),
                       ({"data": np.zeros(3)}, "data must be a path to an .npz, a dict of arrays")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            exprune_onnx.verify_model(model, exact, **bad)


def test_evaluate_model_measures_a_pair_as_the_command_does(model):
    """There was no Python evaluate (an API trial): the command's figures, its refusals as errors."""
    with np.load(SLICE) as f:
        arrays = {"input": f["input"][:64], "labels": f["labels"][:64]}
    pruned = exprune_onnx.optimize_model(model, threshold=-2.0).model
    done = exprune_onnx.evaluate_model(EXAMPLE, pruned, arrays, runs=3)
    assert done.checked.samples == 64 and done.checked.accuracy is not None
    # 3 runs of each and more, until a second of timing (a 0.1 ms pair's 3 runs say little)
    assert 0 < done.flops_saved < done.dense_flops and done.latency.runs > 3 and done.latency.batch == 1
    assert done.as_json("a", "b")["flops_saved_per_sample"] == done.flops_saved
    with pytest.raises(ConfigError, match="the original goes first"):
        exprune_onnx.evaluate_model(pruned, model, arrays)
    with pytest.raises(ConfigError, match="take different inputs"):
        exprune_onnx.evaluate_model(model, EXAMPLE.with_name("digits_mlp.onnx"), arrays)
    with pytest.raises(ConfigError, match="threads must be a whole number >= 1"):
        exprune_onnx.evaluate_model(model, pruned, arrays, threads=0)
    with pytest.raises(ConfigError, match="data must be inputs to evaluate on"):  # 32 random samples, unsaid
        exprune_onnx.evaluate_model(model, pruned, None)
