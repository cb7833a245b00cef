"""Any dataset a study draws its examples from, as one labelled array: the image datasets (train then
test), the tabular benchmarks (optionally re-labelled by k-means), the IMDB reviews (texts); and the
config checks that pair a dataset with a model architecture."""

from __future__ import annotations

from typing import Optional

import numpy as np

from privstudy.data.tabular import TABULAR_DATASETS
from privstudy.harness.config import check


def load_examples(
    dataset: str, data_dir: Optional[str] = None, tabular_classes: Optional[int] = None, relabel_seed: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """(examples, labels, number of classes): raw images (uint8), tabular records, or review texts."""
    if dataset == "imdb":
        from privstudy.data.text import load_imdb

        data = load_imdb(data_dir)
        return data.texts, data.labels, 2
    if dataset in TABULAR_DATASETS:
        from privstudy.data.tabular import load_tabular, relabelled

        tab = relabelled(load_tabular(dataset, data_dir), tabular_classes, relabel_seed)
        return tab.x, tab.y, tab.n_classes
    from privstudy.data.images import load_images

    images = load_images(dataset, data_dir)
    (x, y), n_classes = images.pool(), images.n_classes
    return x, y, n_classes


def check_tabular_arch(dataset: str, arch: str, tabular_classes: Optional[int]) -> None:
    """Tabular datasets go with arch tabular and only with it; tabular_classes only with them."""
    table = dataset in TABULAR_DATASETS
    check(
        table == (arch == "tabular"),
        "arch",
        f"tabular datasets need arch tabular and tabular needs one of {', '.join(TABULAR_DATASETS)}, "
        f"got dataset {dataset} with arch {arch}",
    )
    check(
        tabular_classes is None or (table and tabular_classes >= 2),
        "tabular_classes",
        f"is for tabular datasets and must be >= 2, got {tabular_classes} on {dataset}",
    )
