"""The demo: train a small CNN on Fashion-MNIST once (cached), optimize it for a target."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import keras

from kerascompress import datasets, zoo
from kerascompress.data import DataBundle
from kerascompress.report import Report

CACHE_NAME = "demo_fashion_mnist_cnn_v1.keras"


def default_cache_dir() -> Path:
    return Path(os.environ.get("KERASCOMPRESS_CACHE", Path.home() / ".cache" / "kerascompress"))


def trained_fashion_cnn(cache_dir: Optional[Path] = None, epochs: int = 3, verbose: int = 2) -> keras.Model:
    """The demo CNN trained on Fashion-MNIST, loaded from the cache when present."""
    cache = (cache_dir or default_cache_dir()) / CACHE_NAME
    if cache.exists():
        return keras.models.load_model(cache)
    x, y = datasets.fashion_mnist("train")
    keras.utils.set_random_seed(0)
    model = zoo.compile_classifier(zoo.small_cnn())
    print(f"training the demo CNN on Fashion-MNIST for {epochs} epochs (cached at {cache})", flush=True)
    model.fit(x, y, batch_size=128, epochs=epochs, validation_split=0.1, verbose=verbose)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".partial.keras")
    model.save(tmp)
    tmp.replace(cache)
    return model


def run_demo(out_dir: Path, cache_dir: Optional[Path] = None, epochs: int = 3, target: str = "auto") -> Report:
    """Optimize the demo CNN for ``target`` and write artifacts and the report to ``out_dir``."""
    import kerascompress as kc

    model = trained_fashion_cnn(cache_dir, epochs)
    x_train, y_train = datasets.fashion_mnist("train", limit=10000)
    x_test, y_test = datasets.fashion_mnist("test")
    bundle = DataBundle(x_train, y_train, x_test, y_test)
    result = kc.optimize(model, target=target, data=bundle, output_dir=out_dir, eval_samples=10000)
    return result.report
