"""fastconv.kernels: the named lesson kernels, checked against facts independent of the code."""
import numpy as np
import pytest
from scipy import ndimage

import fastconv
from fastconv import kernels

LESSON_NAMES = ["edge", "sobel_horizontal", "sobel_vertical", "bottom_sobel", "emboss", "sharpen",
                "blur", "outline", "identity"]


def test_lesson_kernels_are_listed():
    assert set(LESSON_NAMES) <= set(kernels.names())
    assert set(kernels.describe()) == set(kernels.names())


def test_edge_is_the_lessons_kernel():
    # the lesson's edge-detection kernel: -1 everywhere, 8 in the centre
    lesson = np.full((3, 3), -1.0)
    lesson[1, 1] = 8
    np.testing.assert_array_equal(kernels.get("edge"), lesson)
    np.testing.assert_array_equal(kernels.EDGE, lesson)


@pytest.mark.parametrize("name", kernels.names())
def test_every_kernel_is_a_float32_3x3(name):
    k = kernels.get(name)
    assert k.dtype == np.float32 and k.shape == (3, 3)
    assert np.all(np.isfinite(k))


# row sums known from image-processing texts: detectors sum to 0, smoothers/sharpeners to 1
@pytest.mark.parametrize("name,total", [
    ("edge", 0), ("outline", 0), ("sobel_horizontal", 0), ("sobel_vertical", 0),
    ("bottom_sobel", 0), ("top_sobel", 0), ("left_sobel", 0), ("right_sobel", 0),
    ("identity", 1), ("emboss", 1), ("sharpen", 1), ("blur", 1), ("box_blur", 1)])
def test_kernel_sums(name, total):
    assert kernels.get(name).sum(dtype=np.float64) == pytest.approx(total, abs=1e-6)


def test_constants_are_read_only_and_get_returns_copies():
    with pytest.raises(ValueError):
        kernels.EDGE[0, 0] = 5
    k = kernels.get("edge")
    k[0, 0] = 5
    assert kernels.get("edge")[0, 0] == -1
    assert not np.shares_memory(k, kernels.EDGE)


def test_names_are_forgiving_about_case_and_separators():
    np.testing.assert_array_equal(kernels.get("Bottom Sobel"), kernels.BOTTOM_SOBEL)
    np.testing.assert_array_equal(kernels.get("bottom-sobel"), kernels.BOTTOM_SOBEL)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError) as info:
        kernels.get("laplace-of-gauss")
    message = str(info.value)
    assert "laplace-of-gauss" in message
    for name in LESSON_NAMES:
        assert name in message
    with pytest.raises(TypeError, match="string"):
        kernels.get(3)


def _step_image(horizontal):
    """Bright (1) top half / left half, dark (0) elsewhere."""
    img = np.zeros((12, 12), np.float32)
    if horizontal:
        img[:6] = 1
    else:
        img[:, :6] = 1
    return img


def _filter(img, kernel):
    return fastconv.conv2d(img[None, :, :, None], kernels.as_filters(kernel), 1, "SAME")[0, :, :, 0]


def test_sobel_orientation_follows_the_documented_signs():
    top_bright = _step_image(horizontal=True)
    left_bright = _step_image(horizontal=False)
    inner = (slice(2, -2), slice(2, -2))
    # a horizontal edge, brighter above: horizontal/top Sobel positive, bottom negative
    assert _filter(top_bright, "sobel_horizontal")[inner].max() == pytest.approx(4)
    assert _filter(top_bright, "sobel_horizontal")[inner].min() == pytest.approx(0)
    assert _filter(top_bright, "bottom_sobel")[inner].min() == pytest.approx(-4)
    np.testing.assert_allclose(_filter(top_bright, "sobel_vertical")[inner], 0, atol=1e-6)
    # a vertical edge, brighter on the left
    assert _filter(left_bright, "sobel_vertical")[inner].max() == pytest.approx(4)
    assert _filter(left_bright, "right_sobel")[inner].min() == pytest.approx(-4)
    np.testing.assert_allclose(_filter(left_bright, "sobel_horizontal")[inner], 0, atol=1e-6)


@pytest.mark.parametrize("name", kernels.names())
def test_filtering_matches_scipy_correlate(name):
    # SAME padding with stride 1 and an odd kernel = zero-padded correlation centred on each pixel
    img = np.random.default_rng(7).random((17, 23), dtype=np.float32)
    expected = ndimage.correlate(img.astype(np.float64), kernels.get(name).astype(np.float64),
                                 mode="constant", cval=0.0)
    np.testing.assert_allclose(_filter(img, name), expected, rtol=1e-5, atol=1e-5)


def test_identity_leaves_the_image_unchanged():
    img = np.random.default_rng(1).random((9, 11), dtype=np.float32)
    np.testing.assert_array_equal(_filter(img, "identity"), img)


def test_load_from_npy_files(tmp_path):
    k = np.arange(15, dtype=np.float64).reshape(3, 5)
    np.save(tmp_path / "k.npy", k)
    np.save(tmp_path / "hwio.npy", k[:, :, None, None])
    for file in ("k.npy", "hwio.npy"):
        loaded = kernels.load(tmp_path / file)
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, k)
    np.testing.assert_array_equal(kernels.load(str(tmp_path / "k.npy")), k)
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        kernels.load(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        kernels.load(tmp_path / "missing.npy")
    np.save(tmp_path / "nan.npy", np.array([[np.nan]]))
    with pytest.raises(ValueError, match="NaN"):
        kernels.load(tmp_path / "nan.npy")


def test_as_filters_shapes():
    assert kernels.as_filters("edge").shape == (3, 3, 1, 1)
    f = kernels.as_filters([[1, 2], [3, 4]], channels=3)
    assert f.shape == (2, 2, 1, 3) and f.dtype == np.float32
    np.testing.assert_array_equal(f[:, :, 0, 2], [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="channels"):
        kernels.as_filters("edge", channels=0)
