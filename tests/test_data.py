"""Data loaders: digits split, the CIFAR-10 reader on small files written here (the writer and
the `cifar_dir` fixture live in conftest.py), and the standard-library text."""

import pickle

import numpy as np
import pytest
from conftest import write_cifar_batch

from lopt import data


def test_cifar10_reader_round_trips_generated_files(cifar_dir):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    folder = cifar_dir / "cifar-10-batches-py"
    write_cifar_batch(folder / "test_batch", images, [7, 0, 3])
    for directory in (cifar_dir, folder):  # the folder itself or its parent
        dataset = data.load_cifar10(str(directory))
        assert dataset.train.inputs.shape == (20, 32, 32, 3) and dataset.num_classes == 10
        np.testing.assert_allclose(dataset.validation.inputs, images / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(dataset.validation.labels, [7, 0, 3])


def test_cifar10_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected the files data_batch_1, .*test_batch"):
        data.load_cifar10(str(tmp_path))


def test_cifar10_foreign_file_rejected(cifar_dir):
    with open(cifar_dir / "cifar-10-batches-py" / "data_batch_3", "wb") as file:
        pickle.dump({b"pixels": []}, file)
    with pytest.raises(ValueError, match="data_batch_3 is not a CIFAR-10 batch"):
        data.load_cifar10(str(cifar_dir))


def test_digits_fixed_disjoint_split():
    first, again = data.load_digits(), data.load_digits()
    assert first.train.inputs.shape[1:] == (8, 8, 1)
    assert len(first.train.labels) + len(first.validation.labels) == 1797
    np.testing.assert_array_equal(first.validation.labels, again.validation.labels)
    assert 0.0 <= first.train.inputs.min() and first.train.inputs.max() <= 1.0
    train_rows = {row.tobytes() for row in first.train.inputs}
    overlap = sum(row.tobytes() in train_rows for row in first.validation.inputs)
    assert overlap < 5, "validation images are (up to duplicates in the data) unseen"


def test_stdlib_text_is_fixed_shifted_and_in_vocabulary():
    first, again = data.load_stdlib_text(num_chars=4000), data.load_stdlib_text(num_chars=4000)
    for split, copy in zip(first[:2], again[:2], strict=True):
        np.testing.assert_array_equal(split.inputs, copy.inputs)
        np.testing.assert_array_equal(split.labels, copy.labels)
    # 3200 train characters -> (3200 - 1) // 32 sequences; 800 validation -> 24.
    assert first.train.inputs.shape == (99, 32) and first.validation.labels.shape == (24, 32)
    assert first.train.inputs.dtype == np.int32 and first.num_classes == 97
    for split in first[:2]:
        np.testing.assert_array_equal(split.labels[:, :-1], split.inputs[:, 1:])
        np.testing.assert_array_equal(split.labels[:-1, -1], split.inputs[1:, 0])
        assert 0 <= split.inputs.min() and split.inputs.max() < 97
    decode = lambda ids: "".join((data.TEXT_VOCABULARY + "?")[i] for i in ids)
    assert decode(first.train.inputs[0]).startswith('"""functools.py')


def test_stdlib_text_missing_sources_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="Python standard-library source but found 0 "
                       ".*functools.py"):
        data.load_stdlib_text(stdlib_dir=str(tmp_path))
    with pytest.raises(ValueError, match="sequence_length < characters per split"):
        data.load_stdlib_text(num_chars=100, sequence_length=32)
