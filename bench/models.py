"""The benchmark models: where each comes from and what the paper reported for its kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DATA = MODELS / "data"

# method.md section 4: the paper gives a range over its models for each budget, and
# separate figures for the magnitude-pruned VGG11 (savings on top of static pruning).
PAPER_RANGE = ("10.98-17.33%", "21.61-27.16%")
PAPER_PRUNED = ("10.24-11.11%", "13.91-14.39%")


@dataclass(frozen=True)
class BenchModel:
    name: str
    title: str
    paper_row: str  # the paper's model this one stands in for
    build: str  # the command that rebuilds the model and its data files
    metric: str = "accuracy"
    sparse: bool = False  # magnitude-pruned: count zero weights as skipped
    paper: tuple[str, str] = PAPER_RANGE
    data: str = ""  # prefix of the data files when it is not the model's name
    decode: bool = False  # also time its one-token step graph (bench/decode.py)
    certify_data: str = ""  # prefix of a larger certification file, <prefix>_certify.npz (bench/certified.py)

    @property
    def onnx(self) -> Path:
        return MODELS / f"{self.name}.onnx"

    @property
    def calibration(self) -> Path:
        return DATA / f"{self.data or self.name}_calib.npz"

    @property
    def certify(self) -> Path | None:
        return DATA / f"{self.certify_data}_certify.npz" if self.certify_data else None

    @property
    def test(self) -> Path:
        return DATA / f"{self.data or self.name}_test.npz"


ALL = (
    BenchModel("fashion_resnet", "ResNet-style CNN, Fashion-MNIST", "ResNet18 / CIFAR-10",
               "python models/build_fashion_resnet.py", certify_data="fashion"),
    BenchModel("fashion_vgg", "VGG-style CNN with BatchNorm, Fashion-MNIST", "VGG11 / CIFAR-10",
               "python models/build_fashion_vgg.py", certify_data="fashion"),
    BenchModel("fashion_vgg_pruned", "the same VGG, magnitude-pruned to >= 90% sparsity",
               "VGG11 pruned to ~98% sparsity", "python models/build_fashion_vgg.py", sparse=True,
               paper=PAPER_PRUNED, certify_data="fashion"),
    BenchModel("debian_gnn", "SIGN-style GNN, Debian package graph (section)", "GCN / ogbg-molhiv",
               "python models/build_debian_gnn.py"),
    BenchModel("kjv_lm", "char-level decoder-only transformer (ReLU FFN), King James Bible", "OPT-1.3B / PIQA",
               "python models/build_kjv_lm.py", decode=True),
    BenchModel("digits_mlp", "scikit-learn digits MLP, exported by skl2onnx", "(not in the paper)",
               "python models/build_digits_mlp.py", paper=("-", "-")),
    BenchModel("fashion_cnn", "the bundled example CNN, Fashion-MNIST", "(not in the paper)",
               "python models/fashion_data.py", paper=("-", "-"), data="fashion", certify_data="fashion"),
)
