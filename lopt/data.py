"""Data sets for child networks, loaded without any network access.

* `load_digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes),
  pixels scaled to [0, 1], split once into fixed train / validation parts by a seeded
  permutation. Needs the `data` extra (scikit-learn).
* `load_cifar10`: CIFAR-10 from a local directory in the standard `cifar-10-batches-py`
  format (pickled dicts with b"data" uint8 [N, 3072] and b"labels"); never downloads.
* `load_stdlib_text`: characters of a fixed list of the Python standard library's own source
  files (present wherever Python is), for next-character prediction.

Images are returned NHWC float32 in [0, 1]; labels int32. Text is returned as token ids:
inputs int32 [N, L] and labels int32 [N, L], the inputs shifted left by one character.
"""

from __future__ import annotations

import os
import pickle
import sysconfig
from typing import NamedTuple

import numpy as np

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"


class Split(NamedTuple):
    """A supervised data set: inputs [N, ...] (float32 images or int32 token ids) and labels
    [N] int32 (classes) or [N, L] int32 (the next token at each of L positions)."""

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


# Stable, public standard-library modules, read in this order; concatenated, the first few
# give far more text than the tasks need, so a version that lacks one still has enough.
STDLIB_TEXT_FILES = (
    "functools.py", "random.py", "textwrap.py", "heapq.py", "bisect.py", "copy.py",
    "string.py", "contextlib.py", "fractions.py", "calendar.py", "queue.py", "shlex.py",
    "weakref.py", "numbers.py", "operator.py", "fnmatch.py", "abc.py",
)
# Vocabulary: newline and the 95 printable ASCII characters; every other byte (tabs, carriage
# returns, non-ASCII) maps to one extra "unknown" id, the last.
TEXT_VOCABULARY = "\n" + "".join(map(chr, range(32, 127)))


def load_stdlib_text(num_chars: int = 80_000, sequence_length: int = 32,
                     validation_fraction: float = 0.2, stdlib_dir: str | None = None) -> Dataset:
    """Next-character prediction on the Python standard library's source, fixed split.

    The files `STDLIB_TEXT_FILES` of `stdlib_dir` (default: this interpreter's
    `sysconfig.get_paths()["stdlib"]`) that exist are read as bytes in that order,
    concatenated and cut to `num_chars`; the first (1 - validation_fraction) of the characters
    train, the rest validate (the text after the training text, never seen in training).
    Each part is cut into non-overlapping sequences: inputs = ids of characters t..t+L-1,
    labels = ids of t+1..t+L.

    Returns:
      Dataset with inputs and labels int32 [N, sequence_length] and
      num_classes = len(TEXT_VOCABULARY) + 1.

    Raises:
      FileNotFoundError: when those files hold fewer than `num_chars` characters.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    num_validation = int(round(validation_fraction * num_chars))
    if sequence_length <= 0 or min(num_validation, num_chars - num_validation) <= sequence_length:
        raise ValueError(f"need 0 < sequence_length < characters per split, got sequence_length "
                         f"{sequence_length} for {num_chars} characters, validation_fraction "
                         f"{validation_fraction}")
    stdlib_dir = sysconfig.get_paths()["stdlib"] if stdlib_dir is None else stdlib_dir
    text = bytearray()
    for name in STDLIB_TEXT_FILES:
        path = os.path.join(stdlib_dir, name)
        if len(text) < num_chars and os.path.isfile(path):
            with open(path, "rb") as file:
                text += file.read()
    if len(text) < num_chars:
        raise FileNotFoundError(
            f"need {num_chars} characters of Python standard-library source but found "
            f"{len(text)} in {stdlib_dir!r}, reading the files {', '.join(STDLIB_TEXT_FILES)}")
    table = np.full(256, len(TEXT_VOCABULARY), np.int32)
    table[np.frombuffer(TEXT_VOCABULARY.encode("ascii"), np.uint8)] = np.arange(
        len(TEXT_VOCABULARY), dtype=np.int32)
    ids = table[np.frombuffer(bytes(text[:num_chars]), np.uint8)]
    return Dataset(_sequences(ids[:-num_validation], sequence_length),
                   _sequences(ids[-num_validation:], sequence_length), len(TEXT_VOCABULARY) + 1)


def _sequences(ids: np.ndarray, length: int) -> Split:
    """Non-overlapping windows of `length` + 1 ids, starting every `length` ids."""
    count = (len(ids) - 1) // length
    starts = np.arange(count)[:, None] * length + np.arange(length)[None, :]
    return Split(ids[starts], ids[starts + 1])
