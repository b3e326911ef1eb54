"""fastconv.viz: images, the extraction pipeline and the pictures."""
import subprocess
import sys

import numpy as np
import pytest

from fastconv import kernels, viz

matplotlib = pytest.importorskip("matplotlib")
PIL_Image = pytest.importorskip("PIL.Image")


def _block_max(a, k):
    H, W = a.shape[0] // k * k, a.shape[1] // k * k
    return a[:H, :W].reshape(H // k, k, W // k, k).max(axis=(1, 3))


def test_samples_ship_with_the_package():
    for name in viz.sample_names():
        path = viz.sample_path(name)
        assert path.is_file() and path.stat().st_size < 20_000
    with pytest.raises(ValueError, match="car"):
        viz.sample_path("nope")


def test_load_image_builtin_defaults_to_grayscale_unit_range():
    img = viz.load_image()
    assert img.dtype == np.float32 and img.ndim == 2
    assert 0.0 <= img.min() < img.max() <= 1.0
    np.testing.assert_array_equal(img, viz.load_image("car"))
    small = viz.load_image("shapes", size=(20, 30))
    assert small.shape == (20, 30)
    assert viz.load_image("car", size=40).shape == (40, 40)
    assert viz.load_image("car", grayscale=False).shape == (*img.shape, 3)


def test_load_image_reads_any_file_exactly(tmp_path):
    values = np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)
    PIL_Image.fromarray(values, mode="L").save(tmp_path / "ramp.png")
    np.testing.assert_allclose(viz.load_image(tmp_path / "ramp.png"), values / 255.0, atol=1e-7)
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 255
    PIL_Image.fromarray(rgb, mode="RGB").save(tmp_path / "red.jpg", quality=100)
    red = viz.load_image(tmp_path / "red.jpg", grayscale=False)
    assert red.shape == (4, 5, 3)
    assert red[..., 0].min() > 0.95 and red[..., 1:].max() < 0.05


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        viz.load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png"):
        viz.load_image(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="size"):
        viz.load_image("car", size=(0, 3))


def test_extract_follows_the_lesson_steps():
    from scipy import ndimage

    img = np.random.default_rng(3).random((21, 18), dtype=np.float32)
    steps = viz.extract(img, "edge")
    expected = ndimage.correlate(img.astype(np.float64), kernels.EDGE.astype(np.float64),
                                 mode="constant")
    np.testing.assert_allclose(steps.filtered, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(steps.detected, np.maximum(steps.filtered, 0))
    np.testing.assert_array_equal(steps.condensed, _block_max(steps.detected, 2))
    assert steps.condensed.shape == (10, 9)
    assert viz.extract(img, "edge", pool_size=3).condensed.shape == (7, 6)


def test_extract_accepts_lesson_style_inputs():
    img = np.random.default_rng(4).random((6, 7), dtype=np.float32)
    ref = viz.extract(img, "sharpen").condensed
    for variant in (img[:, :, None], img[None, :, :, None]):
        np.testing.assert_array_equal(viz.extract(variant, "sharpen").condensed, ref)
    as_uint8 = np.round(img * 255).astype(np.uint8)
    np.testing.assert_allclose(viz.extract(as_uint8, "identity").image, as_uint8 / 255.0,
                               atol=1e-7)
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    np.testing.assert_allclose(viz.extract(rgb, "identity").image, img, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        viz.extract(np.zeros((2, 3, 4, 5)), "edge")


def test_show_kernel_writes_values_with_flipped_text_colours(tmp_path):
    fig = viz.show_kernel("edge", path=tmp_path / "k.png")
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(texts) == 9
    assert texts[(1, 1)].get_text() == "8"
    assert all(texts[(i, j)].get_text() == "-1" for i in range(3) for j in range(3)
               if (i, j) != (1, 1))
    # the centre cell is the darkest blue, the others the lightest: text colours differ
    centre = matplotlib.colors.to_rgb(texts[(1, 1)].get_color())
    corner = matplotlib.colors.to_rgb(texts[(0, 0)].get_color())
    assert sum(centre) > 2.5 and sum(corner) < 0.5
    assert ax.images[0].get_cmap().name == "Blues"
    with PIL_Image.open(tmp_path / "k.png") as png:
        assert png.format == "PNG"


def test_show_kernel_digits_and_no_labels():
    fig = viz.show_kernel("blur", digits=3)
    assert sorted({t.get_text() for t in fig.axes[0].texts}) == ["0.062", "0.125", "0.250"]
    assert not viz.show_kernel("blur", label=False).axes[0].texts
    fig = viz.show_kernel(np.array([[0.0, -0.0001]]), digits=2)
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.00", "0.00"]


def test_show_extraction_draws_four_panels(tmp_path):
    out = tmp_path / "ext.png"
    fig = viz.show_extraction(kernel="edge", path=out)
    assert len(fig.axes) == 4
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes]
    assert titles == ["Input", "Filter", "Detect", "Condense"]
    assert [ax.images[0].get_cmap().name for ax in fig.axes[1:]] == ["magma"] * 3
    assert not any(ax.axison for ax in fig.axes)
    steps = viz.extract(None, "edge")
    np.testing.assert_array_equal(fig.axes[3].images[0].get_array(), steps.condensed)
    with PIL_Image.open(out) as png:
        assert png.width > 2.5 * png.height
    fig5 = viz.show_extraction(kernel="emboss", include_kernel=True)
    assert len(fig5.axes) == 5 and fig5.axes[1].get_title() == "emboss"


def test_show_feature_maps_grid(tmp_path):
    maps = np.random.default_rng(0).random((1, 8, 9, 10), dtype=np.float32)
    fig = viz.show_feature_maps(maps, path=tmp_path / "fm.png")
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 10
    np.testing.assert_array_equal(drawn[7].images[0].get_array(), maps[0, :, :, 7])
    assert (tmp_path / "fm.png").stat().st_size > 0
    fig = viz.show_feature_maps(maps[0], max_maps=4, ncols=2)
    assert len([ax for ax in fig.axes if ax.images]) == 4
    assert "4 of 10" in fig._suptitle.get_text()
    fig = viz.show_feature_maps({"a": maps[0, :, :, 0], "b": maps[0, :, :, 1]})
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["a", "b"]
    with pytest.raises(ValueError, match="batch"):
        viz.show_feature_maps(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="empty"):
        viz.show_feature_maps([])


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install fastconv\[viz\]"):
        viz.show_kernel("edge")


def test_missing_pillow_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(ImportError, match=r"pip install fastconv\[viz\]"):
        viz.load_image("car")


def test_pictures_need_neither_tensorflow_nor_pyplot(tmp_path):
    code = (
        "import sys, fastconv.viz as v, fastconv.models\n"
        f"v.show_extraction(path=r'{tmp_path / 'x.png'}')\n"
        "heavy = ('tensorflow', 'keras', 'torch', 'matplotlib.pyplot')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print(bad)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "x.png").is_file()
