"""Tabular membership-inference benchmarks in the formats the research community distributes them.

Looked for in the folders of ``privstudy.data.locate`` (``data_dir``, ``$PRIVSTUDY_DATA``, Keras' cache,
each with its sub-folder named like the dataset); in each place these formats, first hit wins:

* ``location30`` (Shokri et al. 2017, 5,010 check-in records, 30 classes): ``dataset_location.tgz`` or
  the CSV it holds, ``bangkok``: no header, a quoted label ``"1"``..``"30"`` then 446 binary features.
* ``purchase100`` (197,324 shopping records, 100 classes): ``dataset_purchase.tgz`` or the CSV it holds,
  ``dataset_purchase``: no header, a label 1..100 then 600 binary features.
* ``texas100`` (67,330 hospital discharge records, 100 classes): ``dataset_texas.tgz`` or the folder it
  holds, ``texas/100/feats`` (comma-separated features, one record per line) and ``texas/100/labels``
  (one label 1..100 per line).
* ``digits_binary`` (built in, no file): scikit-learn's 1,797 8x8 digits, each pixel 1 when at least
  half-bright (8 of 16 grey levels): 64 binary features, 10 classes; the demo and test default.

Labels are 0-based in memory. ``cluster_labels`` re-labels records into k classes by k-means on the
features, the way Shokri et al. built Purchase-2 to Purchase-100 from the unlabelled purchase data.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from privstudy.data import locate

TABULAR_DATASETS = ("location30", "purchase100", "texas100", "digits_binary")
TABULAR_SIZES = {"location30": 5010, "purchase100": 197324, "texas100": 67330, "digits_binary": 1797}


@dataclasses.dataclass(frozen=True)
class TabularData:
    """Records (n, d): uint8 when every feature is 0/1, else float32; 0-based int64 labels; source."""

    x: np.ndarray
    y: np.ndarray
    n_classes: int
    source: str

    @property
    def binary(self) -> bool:
        return self.x.dtype == np.uint8


def _as_features(values: np.ndarray, where: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"{where}: expected one record per line with at least one feature")
    if not np.isfinite(values).all():
        raise ValueError(f"{where}: missing or non-numeric feature values")
    if np.isin(values, (0, 1)).all():
        return np.ascontiguousarray(values, dtype=np.uint8)
    return np.ascontiguousarray(values, dtype=np.float32)


def _labels(raw, n_classes: int, where: str) -> np.ndarray:
    y = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy()
    if np.isnan(y).any() or (y != np.round(y)).any():
        raise ValueError(f"{where}: labels must be whole numbers 1..{n_classes}")
    y = y.astype(np.int64)
    if y.min() < 1 or y.max() > n_classes:
        raise ValueError(f"{where}: labels run {y.min()}..{y.max()}, expected 1..{n_classes}")
    return y - 1


def _read_label_first_csv(handle, where: str, n_classes: int) -> TabularData:
    """A headerless CSV whose first field is the (possibly quoted) label, the rest the features."""
    df = pd.read_csv(handle, header=None, dtype={0: str}, low_memory=False)
    if df.shape[1] < 2:
        raise ValueError(f"{where}: expected a label then the features on every line")
    feats = df.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    return TabularData(
        _as_features(feats, where), _labels(df.iloc[:, 0].str.strip(), n_classes, where), n_classes, where
    )


def _from_tgz(path: Path, member: str, read: Callable) -> TabularData:
    with tarfile.open(path, "r:gz") as tar:
        names = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
        hit = next((names[n] for n in names if n == member or n.endswith("/" + member)), None)
        if hit is None:
            raise ValueError(f"{path}: no file {member!r} inside (holds {sorted(names)[:5]})")
        with tar.extractfile(hit) as fh:
            return read(io.BytesIO(fh.read()), f"{path}:{hit.name}")


def _read_location(handle, where: str) -> TabularData:
    return _read_label_first_csv(handle, where, 30)


def _read_purchase(handle, where: str) -> TabularData:
    return _read_label_first_csv(handle, where, 100)


def _read_texas_pair(feats, labels, where: str) -> TabularData:
    x = pd.read_csv(feats, header=None, low_memory=False)
    y = pd.read_csv(labels, header=None).iloc[:, 0]
    if len(x) != len(y):
        raise ValueError(f"{where}: {len(x)} feature lines but {len(y)} labels")
    x = x.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    return TabularData(_as_features(x, where), _labels(y, 100, where), 100, where)


def _read_texas_dir(feats_path: Path) -> TabularData:
    return _read_texas_pair(feats_path, feats_path.parent / "labels", str(feats_path.parent))


def _read_texas_tgz(path: Path) -> TabularData:
    with tarfile.open(path, "r:gz") as tar:
        members = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
        found = {}
        for want in ("texas/100/feats", "texas/100/labels"):
            name = next((n for n in members if n == want or n.endswith("/" + want)), None)
            if name is None:
                raise ValueError(f"{path}: no file {want!r} inside")
            with tar.extractfile(members[name]) as fh:
                found[want] = io.BytesIO(fh.read())
    return _read_texas_pair(found["texas/100/feats"], found["texas/100/labels"], str(path))


def _digits_binary() -> TabularData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data >= 8).astype(np.uint8)
    return TabularData(x, d.target.astype(np.int64), 10, "sklearn.datasets.load_digits (pixels >= 8 of 16)")


_FORMATS: dict[str, list[tuple[str, Callable[[Path], TabularData]]]] = {
    "location30": [
        ("dataset_location.tgz", lambda p: _from_tgz(p, "bangkok", _read_location)),
        ("bangkok", lambda p: _read_location(p, str(p))),
    ],
    "purchase100": [
        ("dataset_purchase.tgz", lambda p: _from_tgz(p, "dataset_purchase", _read_purchase)),
        ("dataset_purchase", lambda p: _read_purchase(p, str(p))),
    ],
    "texas100": [
        ("dataset_texas.tgz", _read_texas_tgz),
        ("texas/100/feats", _read_texas_dir),
    ],
}

_HOW_TO_GET = {
    "location30": "put dataset_location.tgz (or the CSV bangkok it holds) from the public repository "
    "privacytrustlab/datasets in data_dir",
    "purchase100": "put dataset_purchase.tgz (or the CSV dataset_purchase it holds) from the public "
    "repository privacytrustlab/datasets in data_dir",
    "texas100": "put dataset_texas.tgz (or its texas/100/feats and texas/100/labels) from the public "
    "repository privacytrustlab/datasets in data_dir",
}


def search_dirs(name: str, data_dir: Optional[str] = None) -> list[Path]:
    """The folders looked in for tabular dataset ``name``, in order."""
    return locate.search_dirs(name, data_dir)


def find(name: str, data_dir: Optional[str] = None) -> Optional[Path]:
    """The first file or folder that holds dataset ``name``, or None."""
    hit = locate.find(search_dirs(name, data_dir), _FORMATS[name])
    return hit[0] if hit else None


def how_to_get(name: str) -> str:
    """Where the files of ``name`` come from and where to put them."""
    return _HOW_TO_GET[name]


@lru_cache(maxsize=4)
def _load_cached(name: str, data_dir: Optional[str], env: Optional[str]) -> TabularData:
    if name == "digits_binary":
        return _digits_binary()
    if name not in _FORMATS:
        raise ValueError(f"unknown tabular dataset {name!r}; valid: {', '.join(TABULAR_DATASETS)}")
    return locate.load_first(name, locate.search_dirs(name, data_dir), _FORMATS[name], _HOW_TO_GET[name])


def load_tabular(name: str, data_dir: Optional[str] = None) -> TabularData:
    """Load a tabular dataset by name (cached per process: packed trials share one read).

    Raises:
        DataMissing: naming the places looked at and where to get the files.
    """
    import os

    return _load_cached(name, data_dir or None, os.environ.get("PRIVSTUDY_DATA"))


_CLUSTERS: dict[tuple, np.ndarray] = {}  # (id of the cached feature array, k, seed) -> raw labels


def cluster_labels(data: TabularData, k: int, seed: int = 0) -> np.ndarray:
    """Labels 0..k-1 from k-means on the features (one Lloyd run from k-means++ seeds, seeded).

    Cluster numbers are renumbered by size (0 the largest) so that they do not depend on the order in
    which k-means happened to find them. Raises ValueError when a cluster comes out empty or k exceeds
    the records.
    """
    from sklearn.cluster import KMeans

    if not 2 <= k <= len(data.x):
        raise ValueError(f"tabular_classes={k}: must be between 2 and the {len(data.x)} records")
    key = (id(data.x), data.x.shape, k, seed)
    if key not in _CLUSTERS:  # packed trials of one study share the clustering
        km = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=300)
        _CLUSTERS.clear()
        _CLUSTERS[key] = km.fit_predict(data.x.astype(np.float32)).astype(np.int64)
    raw = _CLUSTERS[key]
    counts = np.bincount(raw, minlength=k)
    if (counts == 0).any():
        raise ValueError(
            f"k-means left {int((counts == 0).sum())} of {k} clusters empty; lower tabular_classes"
        )
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    return rank[raw]


def relabelled(data: TabularData, k: Optional[int], seed: int = 0) -> TabularData:
    """``data`` with its labels, or with k-means labels into k classes when k is given."""
    if k is None:
        return data
    return TabularData(data.x, cluster_labels(data, k, seed), k, f"{data.source} (k-means, k={k})")
