"""Image loaders on small files in each real format, nearest neighbours, and the image pipeline on digits."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pandas as pd
import pytest

from privstudy.data import images
from privstudy.data.images import load_images
from privstudy.data.locate import DataMissing
from privstudy.harness.config import from_mapping
from privstudy.similarity.neighbours import nearest_angular

RNG = np.random.default_rng(0)


def _cifar_batch(n: int, key: bytes = b"labels", classes: int = 10) -> tuple[dict, np.ndarray, np.ndarray]:
    imgs = RNG.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = RNG.integers(0, classes, size=n)
    d = {b"data": imgs.transpose(0, 3, 1, 2).reshape(n, -1), key: labels.tolist()}
    return d, imgs, labels


def test_cifar10_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    xs, ys = [], []
    for i in range(1, 6):
        d, x, y = _cifar_batch(4)
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(d))
        xs.append(x)
        ys.append(y)
    d, xt, yt = _cifar_batch(3)
    (folder / "test_batch").write_bytes(pickle.dumps(d))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]})
    )
    data = load_images("cifar10", str(tmp_path))
    assert np.array_equal(data.x_train, np.concatenate(xs)) and np.array_equal(
        data.y_train, np.concatenate(ys)
    )
    assert np.array_equal(data.x_test, xt) and np.array_equal(data.y_test, yt)
    assert data.label_names[3] == "c3" and data.x_train.dtype == np.uint8


def test_cifar100_pickles_use_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    tr, xtr, ytr = _cifar_batch(5, b"fine_labels", 100)
    te, xte, yte = _cifar_batch(2, b"fine_labels", 100)
    (folder / "train").write_bytes(pickle.dumps(tr))
    (folder / "test").write_bytes(pickle.dumps(te))
    data = load_images("cifar100", str(tmp_path))
    assert np.array_equal(data.x_train, xtr) and np.array_equal(data.y_test, yte) and data.n_classes == 100


def test_npz_layout_and_keras_cache(tmp_path, monkeypatch):
    x = RNG.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    y = np.arange(6, dtype=np.uint8).reshape(-1, 1)  # Keras' (n, 1) labels
    (tmp_path / "datasets").mkdir()
    np.savez(tmp_path / "datasets" / "cifar10.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    data = load_images("cifar10")
    assert data.y_train.tolist() == list(range(6)) and data.source.endswith("cifar10.npz")
    px, py = data.pool()
    assert len(px) == 8 and py.tolist() == list(range(6)) + [0, 1]


def _idx(path, arr):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files(tmp_path):
    xtr = RNG.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    ytr = RNG.integers(0, 10, size=5)
    xte, yte = xtr[:2], ytr[:2]
    for name, arr in zip(images.FASHION_FILES, (xtr, ytr, xte, yte)):
        _idx(tmp_path / name, arr)
    data = load_images("fashion_mnist", str(tmp_path))
    assert data.x_train.shape == (5, 28, 28, 1) and np.array_equal(data.x_train[..., 0], xtr)
    assert np.array_equal(data.y_train, ytr) and data.label_names[9] == "Ankle boot"


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="truncated"):
        images.read_idx(path)


def test_missing_dataset_names_the_places_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "k"))
    monkeypatch.delenv("PRIVSTUDY_DATA", raising=False)
    with pytest.raises(DataMissing) as err:
        load_images("cifar10", str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert "nowhere" in msg and "privstudy data fetch cifar10" in msg and "\n" not in msg


def test_digits_are_built_in():
    d = load_images("digits")
    assert d.x_train.shape == (1797, 8, 8, 1) and d.x_train.max() == 255 and len(d.x_test) == 0


def test_nearest_angular_matches_brute_force():
    q = RNG.normal(size=(300, 16)).astype(np.float32)
    r = q[:120]  # the first 120 queries are the references (members)
    own = np.full(300, -1)
    own[:120] = np.arange(120)
    labels = RNG.integers(0, 3, 300)
    for lab in (None, labels):
        kw = {} if lab is None else {"query_labels": lab, "ref_labels": lab[:120]}
        dist, idx = nearest_angular(q, r, own, block=37, **kw)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        cos = qn.astype(np.float64) @ qn[:120].T.astype(np.float64)
        cos[np.arange(120), np.arange(120)] = -np.inf
        if lab is not None:
            cos[lab[:, None] != lab[None, :120]] = -np.inf
        want = np.arccos(np.clip(cos.max(axis=1), -1, 1)) / np.pi
        assert np.allclose(dist, want, atol=1e-5)
        assert (idx == cos.argmax(axis=1)).mean() > 0.99  # float32 near-ties may differ
        assert (idx[:120] != np.arange(120)).all(), "a member is never its own neighbour"


def test_pipeline_standardises_with_the_members_statistics_only():
    """The image trial's preprocessing: the members' per-channel statistics, applied to every point."""
    from privstudy.runner import standardised_pool

    x = RNG.integers(0, 256, size=(40, 4, 4, 3), dtype=np.uint8)
    member = np.zeros(40, bool)
    member[::2] = True
    x[~member] = 255  # non-members would shift the statistics if they were used
    xs = standardised_pool(x, member)
    assert np.allclose(xs[member].mean(axis=(0, 1, 2)), 0, atol=1e-5)
    assert np.allclose(xs[member].std(axis=(0, 1, 2)), 1, atol=1e-4)
    # Non-members go through the same transform: (1 - mean) / std of the members, computed by hand.
    xm = x[member].astype(np.float64) / 255
    want = (1.0 - xm.mean(axis=(0, 1, 2))) / xm.std(axis=(0, 1, 2))
    assert np.allclose(xs[~member], want, atol=1e-4)


def test_stratified_member_split_is_seeded_and_balanced():
    from privstudy.runner import split_members

    y = np.repeat(np.arange(10), 20)
    a, b = split_members(y, 3), split_members(y, 3)
    assert np.array_equal(a, b) and a.sum() == 100
    assert all(a[y == c].sum() == 10 for c in range(10))
    assert not np.array_equal(a, split_members(y, 4))


def test_cnn_similarity_same_seed_same_rows():
    from privstudy.runner import CnnSimilarityConfig, run

    cfg = from_mapping(
        CnnSimilarityConfig,
        {
            "dataset": "digits",
            "pool_size": 300,
            "arch": "mlp",
            "epochs": 5,
            "batch_size": 32,
            "patience": 2,
            "deterministic": True,
            "seed": 1,
            "pixel_distance": True,
        },
    )
    a, b = run(cfg), run(cfg)
    for name in ("cnn_points", "cnn_metrics", "cnn_bins", "cnn_extremes"):
        pd.testing.assert_frame_equal(a[name], b[name])
    pts = a["cnn_points"]
    assert len(pts) == 300 and pts["is_member"].sum() == 150
    assert pts["nn_distance"].between(0, 1).all() and pts["nn_pixel_distance"].between(0, 1).all()
    members = pts[pts["is_member"]]
    assert (members["nn_point_id"] != members["point_id"]).all()
    assert set(pts["nn_point_id"]) <= set(members["point_id"])
    top = a["cnn_extremes"].query("subset == 'top'")
    assert len(top) == 15 and top["confidence"].is_monotonic_decreasing
