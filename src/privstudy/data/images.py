"""Image datasets in their standard public formats, as uint8 arrays (n, height, width, channels).

Each dataset is looked for in the folders of ``privstudy.data.locate`` (``data_dir``, ``$PRIVSTUDY_DATA``,
Keras' cache), and for fashion_mnist also in Keras' ``fashion-mnist`` folder and Debian's
``/usr/share/dataset-fashion-mnist`` (package ``dataset-fashion-mnist``); the first hit wins.

In each place, the formats read are: ``cifar10.npz`` / ``cifar100.npz`` / ``fashion_mnist.npz``
(arrays ``x_train, y_train, x_test, y_test``), the official ``cifar-10-batches-py/`` and
``cifar-100-python/`` pickle folders, and the four Fashion-MNIST idx ``.gz`` files. ``digits`` is
scikit-learn's built-in 8x8 digits (1,797 images, no download), the default of demos and tests.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import struct
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from privstudy.data import locate

IMAGE_DATASETS = ("cifar10", "cifar100", "fashion_mnist", "digits")
# Examples (train + test) of each dataset in its standard public form: configs check sizes against them
# before any trial imports TensorFlow or reads a file.
DATASET_SIZES = {"cifar10": 60000, "cifar100": 60000, "fashion_mnist": 70000, "digits": 1797, "imdb": 50000}
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
DEBIAN_FASHION = Path("/usr/share/dataset-fashion-mnist")


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A dataset's train and test split: uint8 images (n, h, w, c), int64 labels, class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    label_names: tuple[str, ...]
    source: str  # where it was read from

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def pool(self) -> tuple[np.ndarray, np.ndarray]:
        """Train then test images, concatenated (the published pool of 60,000 for CIFAR-10)."""
        return np.concatenate([self.x_train, self.x_test]), np.concatenate([self.y_train, self.y_test])


def search_dirs(name: str, data_dir: Optional[str] = None) -> list[Path]:
    """The folders looked in for image dataset ``name``, in order."""
    extra = [locate.keras_cache() / "fashion-mnist", DEBIAN_FASHION] if name == "fashion_mnist" else []
    return locate.search_dirs(name, data_dir, extra)


def _check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"{where}: expected images (n, h, w[, c]) and n labels, got {x.shape} and {y.shape}")
    return np.ascontiguousarray(x, dtype=np.uint8), np.asarray(y).reshape(-1).astype(np.int64)


def _read_npz(path: Path, labels: tuple[str, ...]) -> ImageData:
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise ValueError(
                f"{path}: missing arrays {sorted(missing)}; expected x_train, y_train, x_test, y_test"
            )
        xtr, ytr = _check_arrays(f["x_train"], f["y_train"], str(path))
        xte, yte = _check_arrays(f["x_test"], f["y_test"], str(path))
        names = tuple(str(s) for s in f["label_names"]) if "label_names" in f.files else labels
    return ImageData(xtr, ytr, xte, yte, names, str(path))


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def _cifar_images(d: dict) -> np.ndarray:
    data = np.asarray(d[b"data"], dtype=np.uint8)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _read_cifar10_batches(folder: Path) -> ImageData:
    xs, ys = [], []
    for i in range(1, 6):
        d = _unpickle(folder / f"data_batch_{i}")
        xs.append(_cifar_images(d))
        ys.append(np.asarray(d[b"labels"]))
    t = _unpickle(folder / "test_batch")
    names = CIFAR10_LABELS
    meta = folder / "batches.meta"
    if meta.exists():
        names = tuple(n.decode() for n in _unpickle(meta)[b"label_names"])
    xtr, ytr = _check_arrays(np.concatenate(xs), np.concatenate(ys), str(folder))
    xte, yte = _check_arrays(_cifar_images(t), np.asarray(t[b"labels"]), str(folder))
    return ImageData(xtr, ytr, xte, yte, names, str(folder))


def _read_cifar100_pickles(folder: Path) -> ImageData:
    tr, te = _unpickle(folder / "train"), _unpickle(folder / "test")
    names = tuple(f"class_{i}" for i in range(100))
    meta = folder / "meta"
    if meta.exists():
        names = tuple(n.decode() for n in _unpickle(meta)[b"fine_label_names"])
    xtr, ytr = _check_arrays(_cifar_images(tr), np.asarray(tr[b"fine_labels"]), str(folder))
    xte, yte = _check_arrays(_cifar_images(te), np.asarray(te[b"fine_labels"]), str(folder))
    return ImageData(xtr, ytr, xte, yte, names, str(folder))


def read_idx(path: Path) -> np.ndarray:
    """An idx file (optionally gzipped), as used by MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} values for shape {shape} (truncated file?)")
    return data.reshape(shape)


def _read_fashion(folder: Path) -> ImageData:
    xtr, ytr, xte, yte = (read_idx(folder / f) for f in FASHION_FILES)
    xtr, ytr = _check_arrays(xtr, ytr, str(folder))
    xte, yte = _check_arrays(xte, yte, str(folder))
    return ImageData(xtr, ytr, xte, yte, FASHION_LABELS, str(folder))


def _digits() -> ImageData:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 0..16 gray levels to 0..255; the 1,797 images keep sklearn's order; no official test split.
    x = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    empty_x = np.zeros((0,) + x.shape[1:], dtype=np.uint8)
    return ImageData(
        x,
        y,
        empty_x,
        np.zeros(0, dtype=np.int64),
        tuple(str(i) for i in range(10)),
        "sklearn.datasets.load_digits",
    )


# name -> [(what to look for in a folder, how to read it)]
_FORMATS: dict[str, list[tuple[str, Callable[[Path], ImageData]]]] = {
    "cifar10": [
        ("cifar10.npz", lambda p: _read_npz(p, CIFAR10_LABELS)),
        ("cifar-10-batches-py", _read_cifar10_batches),
    ],
    "cifar100": [
        ("cifar100.npz", lambda p: _read_npz(p, tuple(f"class_{i}" for i in range(100)))),
        ("cifar-100-python", _read_cifar100_pickles),
    ],
    "fashion_mnist": [
        ("fashion_mnist.npz", lambda p: _read_npz(p, FASHION_LABELS)),
        (FASHION_FILES[0], lambda p: _read_fashion(p.parent)),
    ],
}

_HOW_TO_GET = {
    "cifar10": "run `privstudy data fetch cifar10` on a machine with internet (Keras' cache), or put "
    "cifar10.npz (x_train, y_train, x_test, y_test) or the official cifar-10-batches-py/ folder "
    "in data_dir",
    "cifar100": "run `privstudy data fetch cifar100` on a machine with internet, or put cifar100.npz or "
    "the official cifar-100-python/ folder in data_dir",
    "fashion_mnist": "run `privstudy data fetch fashion_mnist` on a machine with internet, install Debian's "
    "dataset-fashion-mnist, or put the four idx .gz files in data_dir",
}


def find(name: str, data_dir: Optional[str] = None) -> Optional[Path]:
    """The first file or folder that holds dataset ``name``, or None."""
    hit = locate.find(search_dirs(name, data_dir), _FORMATS[name])
    return hit[0] if hit else None


def load_images(name: str, data_dir: Optional[str] = None) -> ImageData:
    """Load an image dataset by name; raise DataMissing naming the places looked at and the fix."""
    if name == "digits":
        return _digits()
    if name not in _FORMATS:
        raise ValueError(f"unknown image dataset {name!r}; valid: {', '.join(IMAGE_DATASETS)}")
    return locate.load_first(name, search_dirs(name, data_dir), _FORMATS[name], _HOW_TO_GET[name])


def fetch(name: str) -> str:
    """Download ``name`` into Keras' cache with ``keras.datasets`` (needs internet); returns where."""
    if name == "digits":
        return "digits is built into scikit-learn: nothing to fetch"
    if name not in _FORMATS:
        raise ValueError(f"unknown image dataset {name!r}; valid: {', '.join(IMAGE_DATASETS)}")
    import tensorflow as tf

    getattr(tf.keras.datasets, name).load_data()
    return str(find(name) or locate.keras_cache())
