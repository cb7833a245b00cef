"""Where dataset files are looked for, and the first-hit search shared by every loader.

For a dataset ``name`` the folders are, in order: ``data_dir`` (a trial parameter) and its sub-folder
``name``; ``$PRIVSTUDY_DATA`` and its sub-folder ``name``; Keras' cache (``$KERAS_HOME/datasets`` or
``~/.keras/datasets``, where ``keras.datasets.*.load_data()`` and ``privstudy data fetch`` download);
then any folders a loader adds. In each folder a loader's formats are tried in order; the first hit wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

T = TypeVar("T")
Formats = Sequence[tuple[str, Callable[[Path], T]]]
"""A loader's formats: (file or folder name to look for, the function that reads it), in order."""


class DataMissing(FileNotFoundError):
    """A dataset is in none of the places looked at; the message lists them and how to get it."""


def keras_cache() -> Path:
    """Keras' dataset cache folder."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def search_dirs(name: str, data_dir: Optional[str] = None, extra: Sequence[Path] = ()) -> list[Path]:
    """The folders looked in for dataset ``name``, in order (see the module doc)."""
    roots: list[Path] = []
    for base in (data_dir, os.environ.get("PRIVSTUDY_DATA")):
        if base:
            roots += [Path(base).expanduser(), Path(base).expanduser() / name]
    return roots + [keras_cache(), *extra]


def find(folders: Sequence[Path], formats: Formats) -> Optional[tuple[Path, Callable[[Path], T]]]:
    """The first (path, reader) of ``formats`` present in ``folders``, or None."""
    for folder in folders:
        for pattern, reader in formats:
            if (folder / pattern).exists():
                return folder / pattern, reader
    return None


def load_first(name: str, folders: Sequence[Path], formats: Formats, how_to_get: str) -> T:
    """Read dataset ``name`` from the first place and format found.

    Raises:
        DataMissing: naming every folder looked in and ``how_to_get`` (the fix).
    """
    hit = find(folders, formats)
    if hit is None:
        looked = ", ".join(str(p) for p in folders)
        raise DataMissing(f"{name} not found (looked in {looked}); {how_to_get}")
    path, reader = hit
    return reader(path)
