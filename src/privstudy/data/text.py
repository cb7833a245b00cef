"""IMDB movie reviews (Maas et al. 2011) in their standard public formats, as raw text and 0/1 labels.

Looked for in the folders of ``privstudy.data.locate`` (``data_dir``, ``$PRIVSTUDY_DATA``, Keras' cache,
each with its ``imdb`` sub-folder); in each place these formats, first hit wins:

* ``imdb_aclImdb_labeled.csv.gz`` / ``.csv``: columns ``split,label,rating,id,text``;
* ``aclImdb/``: the original folder, ``{train,test}/{pos,neg}/<id>_<rating>.txt``;
* ``IMDB Dataset.csv`` (Kaggle): columns ``review,sentiment`` (positive/negative), no split;
* ``imdb.npz`` with ``imdb_word_index.json`` (what ``keras.datasets.imdb`` caches): word ids decoded
  back to text (Keras' reserved ids 0-2 dropped, out-of-vocabulary words as ``[UNK]``).

HTML line breaks (``<br />``) are replaced by spaces.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from privstudy.data import locate
from privstudy.data.locate import DataMissing

_BR = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)
SHARED_CSV = "imdb_aclImdb_labeled.csv.gz"


@dataclasses.dataclass(frozen=True)
class TextData:
    """Reviews (object array of str), labels (1 = positive), split ("train", "test" or "all"), source."""

    texts: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    source: str


def clean(text: str) -> str:
    """Replace HTML line breaks with spaces."""
    return _BR.sub(" ", text)


def _make(texts, labels, split, source: str) -> TextData:
    t = np.array([clean(str(s)) for s in texts], dtype=object)
    return TextData(t, np.asarray(labels, dtype=np.int64), np.asarray(split, dtype=object), source)


def _read_shared_csv(path: Path) -> TextData:
    df = pd.read_csv(path, dtype={"text": str, "split": str})
    missing = {"split", "label", "text"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}; expected split,label,rating,id,text")
    return _make(
        df["text"].to_numpy(dtype=object), df["label"], df["split"].to_numpy(dtype=object), str(path)
    )


def _read_acl(folder: Path) -> TextData:
    texts, labels, split = [], [], []
    for part in ("train", "test"):
        for sentiment, label in (("neg", 0), ("pos", 1)):
            d = folder / part / sentiment
            if not d.is_dir():
                continue
            for f in sorted(
                d.glob("*.txt"),
                key=lambda p: (int(p.stem.split("_")[0]) if p.stem.split("_")[0].isdigit() else 0, p.name),
            ):
                texts.append(f.read_text(encoding="utf-8", errors="replace"))
                labels.append(label)
                split.append(part)
    if not texts:
        raise ValueError(f"{folder}: no reviews in {{train,test}}/{{pos,neg}}/*.txt")
    return _make(texts, labels, split, str(folder))


def _read_kaggle(path: Path) -> TextData:
    df = pd.read_csv(path, dtype=str)
    if {"review", "sentiment"} - set(df.columns):
        raise ValueError(f"{path}: expected columns review,sentiment")
    sentiment = df["sentiment"].str.strip().str.lower()
    bad = ~sentiment.isin(["positive", "negative"])
    if bad.any():
        raise ValueError(
            f"{path}: sentiment must be positive or negative (row {int(np.flatnonzero(bad)[0]) + 2})"
        )
    return _make(
        df["review"].to_numpy(dtype=object),
        (sentiment == "positive").astype(int),
        ["all"] * len(df),
        str(path),
    )


def _read_keras_npz(path: Path) -> TextData:
    index_path = path.parent / "imdb_word_index.json"
    if not index_path.exists():
        raise DataMissing(
            f"{path} holds word ids; decoding them needs {index_path} "
            f"(`privstudy data fetch imdb` downloads both)"
        )
    word_index = json.loads(index_path.read_text())
    # keras.datasets.imdb: id = word rank + 3 (0 padding, 1 start, 2 out-of-vocabulary)
    words = {i + 3: w for w, i in word_index.items()}
    with np.load(path, allow_pickle=True) as f:
        parts = [("train", f["x_train"], f["y_train"]), ("test", f["x_test"], f["y_test"])]
    texts, labels, split = [], [], []
    for name, xs, ys in parts:
        for seq, y in zip(xs, ys):
            texts.append(" ".join(words.get(int(i), "[UNK]") for i in seq if int(i) > 2))
            labels.append(int(y))
            split.append(name)
    return _make(texts, labels, split, str(path))


_FORMATS: list[tuple[str, Callable[[Path], TextData]]] = [
    (SHARED_CSV, _read_shared_csv),
    ("imdb_aclImdb_labeled.csv", _read_shared_csv),
    ("aclImdb", _read_acl),
    ("IMDB Dataset.csv", _read_kaggle),
    ("imdb.npz", _read_keras_npz),
]


def search_dirs(name: str = "imdb", data_dir: Optional[str] = None) -> list[Path]:
    """The folders looked in, in order."""
    return locate.search_dirs(name, data_dir)


def find(name: str = "imdb", data_dir: Optional[str] = None) -> Optional[Path]:
    """The first file or folder holding IMDB, or None."""
    hit = locate.find(search_dirs(name, data_dir), _FORMATS)
    return hit[0] if hit else None


def load_imdb(data_dir: Optional[str] = None) -> TextData:
    """Load IMDB from the first place and format found; DataMissing names the places and the fix."""
    return locate.load_first(
        "imdb",
        search_dirs("imdb", data_dir),
        _FORMATS,
        f"run `privstudy data fetch imdb` on a machine with internet, or put the aclImdb/ "
        f"folder, 'IMDB Dataset.csv' or {SHARED_CSV} in data_dir",
    )


def fetch(name: str = "imdb") -> str:
    """Download Keras' imdb.npz and its word index into Keras' cache (needs internet)."""
    import tensorflow as tf

    tf.keras.datasets.imdb.load_data()
    tf.keras.datasets.imdb.get_word_index()
    return str(find(name) or locate.keras_cache())
