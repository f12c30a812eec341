"""Data sets for child networks, loaded without any network access.

* `load_digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes),
  pixels scaled to [0, 1], split once into fixed train / validation parts by a seeded
  permutation. Needs the `data` extra (scikit-learn).
* `load_cifar10`: CIFAR-10 from a local directory in the standard `cifar-10-batches-py`
  format (pickled dicts with b"data" uint8 [N, 3072] and b"labels"); never downloads.

Images are returned NHWC float32 in [0, 1]; labels int32.
"""

from __future__ import annotations

import os
import pickle
from typing import NamedTuple

import numpy as np

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"


class Split(NamedTuple):
    """A supervised data set: inputs [N, ...] float32 and labels [N] int32."""

    inputs: np.ndarray
    labels: np.ndarray


class Dataset(NamedTuple):
    train: Split
    validation: Split
    num_classes: int


def load_digits(validation_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The scikit-learn digits as images [N, 8, 8, 1] in [0, 1], split train / validation."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise ImportError("the digits data set needs scikit-learn: pip install 'lopt[data]'") \
            from error
    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    num_validation = int(round(validation_fraction * len(labels)))
    validation, train = order[:num_validation], order[num_validation:]
    return Dataset(Split(images[train], labels[train]),
                   Split(images[validation], labels[validation]), 10)


def _read_cifar_batch(path: str) -> Split:
    with open(path, "rb") as file:
        batch = pickle.load(file, encoding="bytes")
    try:
        data, labels = batch[b"data"], batch[b"labels"]
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a CIFAR-10 batch (needs b'data' and b'labels')") \
            from error
    data = np.asarray(data, np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise ValueError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} and "
                         f"{len(labels)} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    return Split(images, np.asarray(labels, np.int32))


def load_cifar10(data_dir: str) -> Dataset:
    """CIFAR-10 from `data_dir` (the `cifar-10-batches-py` folder or its parent).

    Training = the five data batches, validation = the test batch; images [N, 32, 32, 3].
    Raises FileNotFoundError naming the expected files when they are missing.
    """
    candidates = [data_dir, os.path.join(data_dir, "cifar-10-batches-py")]
    expected = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    for directory in candidates:
        if all(os.path.isfile(os.path.join(directory, name)) for name in expected):
            train = [_read_cifar_batch(os.path.join(directory, n)) for n in CIFAR10_TRAIN_FILES]
            validation = _read_cifar_batch(os.path.join(directory, CIFAR10_TEST_FILE))
            return Dataset(Split(np.concatenate([s.inputs for s in train]),
                                 np.concatenate([s.labels for s in train])), validation, 10)
    raise FileNotFoundError(
        f"no CIFAR-10 data in {data_dir!r}: expected the files {', '.join(expected)} of the "
        "standard 'cifar-10-batches-py' format there or in its cifar-10-batches-py/ folder "
        "(lopt never downloads data)")
