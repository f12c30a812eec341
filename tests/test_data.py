"""Data loaders: digits split, and the CIFAR-10 reader on small files written here."""

import pickle

import numpy as np
import pytest

from lopt import data


def _write_cifar_batch(path, images_nhwc, labels):
    flat = images_nhwc.transpose(0, 3, 1, 2).reshape(len(labels), 3072)
    with open(path, "wb") as file:
        pickle.dump({b"data": flat, b"labels": list(labels), b"batch_label": b"x"}, file)


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*data.CIFAR10_TRAIN_FILES, data.CIFAR10_TEST_FILE):
        images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
        _write_cifar_batch(folder / name, images, rng.integers(0, 10, size=4))
    return tmp_path


def test_cifar10_reader_round_trips_generated_files(cifar_dir):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    folder = cifar_dir / "cifar-10-batches-py"
    _write_cifar_batch(folder / "test_batch", images, [7, 0, 3])
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
