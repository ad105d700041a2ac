"""The demo: train a small CNN on Fashion-MNIST once (cached), optimize it for a target."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import keras

import kerascompress as kc
from kerascompress.examples import datasets, zoo
from kerascompress.pipeline.report import Report

CACHE_NAME = "demo_fashion_mnist_cnn_v1.keras"


def default_cache_dir() -> Path:
    return Path(os.environ.get("KERASCOMPRESS_CACHE", Path.home() / ".cache" / "kerascompress"))


def trained_fashion_cnn(
    cache_dir: Optional[Path] = None, epochs: int = 3, train_limit: Optional[int] = None, verbose: int = 2
) -> keras.Model:
    """The demo CNN trained on Fashion-MNIST, loaded from the cache when present.

    The cache file name records ``epochs`` and ``train_limit`` so a different setting
    never silently reuses another model.
    """
    tag = f"e{epochs}" + (f"_n{train_limit}" if train_limit else "")
    cache = (cache_dir or default_cache_dir()) / CACHE_NAME.replace(".keras", f"_{tag}.keras")
    if cache.exists():
        print(f"using the cached demo CNN {cache}", flush=True)
        return keras.models.load_model(cache)
    x, y = datasets.fashion_mnist("train", limit=train_limit)
    keras.utils.set_random_seed(0)
    model = zoo.compile_classifier(zoo.small_cnn())
    print(f"training the demo CNN on Fashion-MNIST for {epochs} epochs (cached at {cache})", flush=True)
    model.fit(x, y, batch_size=128, epochs=epochs, validation_split=0.1, verbose=verbose)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".partial.keras")
    model.save(tmp)
    tmp.replace(cache)
    return model


def run_demo(
    out_dir: Path,
    cache_dir: Optional[Path] = None,
    epochs: int = 3,
    target: str = "auto",
    train_limit: Optional[int] = None,
    eval_limit: Optional[int] = None,
    recipe: str = "default",
    max_search_seconds: float = 600.0,
) -> Report:
    """Optimize the demo CNN for ``target`` and write artifacts and the report to ``out_dir``.

    Fine-tuning and calibration use training images; every verdict is judged on the
    test split, which the demo CNN never saw. The search gets ten minutes.
    """

    model = trained_fashion_cnn(cache_dir, epochs, train_limit)
    x_train, y_train = datasets.fashion_mnist("train", limit=min(30000, train_limit or 30000))
    x_test, y_test = datasets.fashion_mnist("test", limit=eval_limit)
    result = kc.optimize(model, target=target, data=(x_train, y_train), validation_data=(x_test, y_test),
                         recipe=recipe, output_dir=out_dir,
                         constraints=kc.Constraints(max_search_seconds=max_search_seconds))
    return result.report
