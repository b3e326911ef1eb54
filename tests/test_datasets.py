"""fastconv.datasets: IDX files written by the tests (gzipped and raw), and the digits."""
import gzip

import numpy as np
import pytest

from fastconv import datasets


def _write_mnist_dir(directory, n_train=5, n_test=3, gz=True, rng=None):
    rng = rng or np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        datasets.write_idx(directory / (name + (".gz" if gz else "")), arr)
    return arrays


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    arr = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    datasets.write_idx(path, arr)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == gz
    back = datasets.read_idx(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_header_is_the_published_format(tmp_path):
    path = tmp_path / "labels"
    datasets.write_idx(path, np.array([7, 2, 1], np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])
    # compression is detected from the content, whatever the name
    gz = tmp_path / "labels-no-suffix"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(datasets.read_idx(gz), [7, 2, 1])


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_round_trip(tmp_path, gz):
    arrays = _write_mnist_dir(tmp_path, gz=gz)
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(tmp_path)
    assert x_train.shape == (5, 28, 28, 1) and x_train.dtype == np.float32
    assert x_test.shape == (3, 28, 28, 1)
    np.testing.assert_allclose(x_train[..., 0], arrays["train-images-idx3-ubyte"] / 255.0,
                               rtol=1e-6)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    (raw, _), _ = datasets.load_mnist(str(tmp_path), normalize=False, channels=False)
    assert raw.dtype == np.uint8 and raw.shape == (5, 28, 28)
    np.testing.assert_array_equal(raw, arrays["train-images-idx3-ubyte"])


def test_mixed_gzipped_and_raw_files(tmp_path):
    arrays = _write_mnist_dir(tmp_path, gz=True)
    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    _, (_, y_test) = datasets.load_mnist(tmp_path)
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


def test_missing_files_name_the_expected_files(tmp_path):
    _write_mnist_dir(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_fashion_mnist(tmp_path)
    msg = str(info.value)
    assert "path" in msg and "lacks t10k-images-idx3-ubyte" in msg
    assert all(name in msg for name in datasets.MNIST_FILES) and "never downloads" in msg
    with pytest.raises(FileNotFoundError, match="not a directory.*train-images-idx3-ubyte"):
        datasets.load_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not found"):
        datasets.read_idx(tmp_path / "nowhere.idx")


def test_bad_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x89PNG....")
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(bad)
    bad.write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 0]))
    with pytest.raises(ValueError, match="type code 0x42"):
        datasets.read_idx(bad)
    bad.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="truncated"):
        datasets.read_idx(bad)
    bad.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))[:-6])
    with pytest.raises(ValueError, match="could not be read"):
        datasets.read_idx(bad)
    with pytest.raises(ValueError, match="array: dtype"):
        datasets.write_idx(tmp_path / "c", np.zeros(3, np.complex64))
    # images and labels that disagree
    (tmp_path / "d").mkdir()
    arrays = _write_mnist_dir(tmp_path / "d")
    datasets.write_idx(tmp_path / "d" / "train-labels-idx1-ubyte.gz",
                       arrays["train-labels-idx1-ubyte"][:2])
    with pytest.raises(ValueError, match="train-labels.*5 images"):
        datasets.load_mnist(tmp_path / "d")


def test_load_digits_as_images():
    pytest.importorskip("sklearn")
    x, y = datasets.load_digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert y.shape == (1797,) and set(np.unique(y)) == set(range(10))
    (xtr, ytr), (xte, yte) = datasets.load_digits(test_fraction=0.2, seed=1)
    assert len(xtr) + len(xte) == 1797 and abs(len(xte) - 0.2 * 1797) < 10
    assert set(np.unique(yte)) == set(range(10))
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.load_digits(test_fraction=1.5)


def test_load_digits_without_sklearn_says_how_to_install(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        datasets.load_digits()
