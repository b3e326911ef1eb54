"""viz.show_filters / viz.conv_filters: the learned kernels of a Conv2D as a grid."""
import numpy as np
import pytest

from fastconv import viz
from fastconv.models import Conv2D, Dense, Flatten, MaxPooling2D, Sequential

pytest.importorskip("matplotlib")
PIL_Image = pytest.importorskip("PIL.Image")


def _model():
    return Sequential([Conv2D(6, 3, activation="relu", input_shape=(8, 8, 1)), MaxPooling2D(2),
                       Conv2D(4, 3, activation="relu"), Flatten(), Dense(10)], seed=0)


def test_conv_filters_from_a_model_layer_or_weights():
    model = _model()
    w = model.layers[0].get_weights()[0]
    kernels, name = viz.conv_filters(model)
    assert name == "conv2d" and len(kernels) == 6 and kernels[0].shape == (3, 3)
    np.testing.assert_array_equal(kernels[5], w[:, :, 0, 5])
    kernels, name = viz.conv_filters(model, "conv2d_1", channel="mean")
    w2 = model.get_layer("conv2d_1").get_weights()[0]
    assert name == "conv2d_1" and len(kernels) == 4
    np.testing.assert_allclose(kernels[1], w2[:, :, :, 1].mean(axis=2), rtol=1e-6)
    assert viz.conv_filters(model.layers[2], channel=3)[0][0].shape == (3, 3)
    assert len(viz.conv_filters(model.get_weights())[0]) == 6  # first 4-D array
    assert len(viz.conv_filters(w)[0]) == 6 and viz.conv_filters(w)[1] is None
    assert len(viz.conv_filters(np.eye(3))[0]) == 1


def test_conv_filters_errors_name_the_parameter():
    model = _model()
    with pytest.raises(ValueError, match="layer: 'max_pooling2d' is a MaxPooling2D.*conv2d_1"):
        viz.conv_filters(model, 1)
    with pytest.raises(ValueError, match="channel must be in \\[0, 1\\)"):
        viz.conv_filters(model, channel=1)
    with pytest.raises(ValueError, match="channel"):
        viz.conv_filters(model, channel="max")
    with pytest.raises(ValueError, match="model_or_weights: expected HWIO"):
        viz.conv_filters(np.zeros((3, 3, 1)))
    with pytest.raises(ValueError, match="no 4-D"):
        viz.conv_filters([np.zeros(3)])
    with pytest.raises(ValueError, match="no Conv2D"):
        viz.conv_filters(Sequential([Flatten(input_shape=(2, 2, 1)), Dense(2)]))
    with pytest.raises(ValueError, match="max_filters"):
        viz.show_filters(model, max_filters=0)


def test_show_filters_renders_a_grid_png(tmp_path):
    model = _model()
    path = tmp_path / "filters.png"
    fig = viz.show_filters(model, path=path, dpi=80)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 6
    assert [ax.get_title() for ax in panels] == [str(i) for i in range(6)]
    assert len(panels[0].texts) == 9  # 3x3: values written on the cells
    w = model.layers[0].get_weights()[0][:, :, 0, 0]
    assert panels[0].texts[4].get_text() == f"{w[1, 1]:.2f}".replace("-0.00", "0.00")
    assert "conv2d: 6 filters 3x3" in fig._suptitle.get_text()
    with PIL_Image.open(path) as img:
        assert img.format == "PNG" and img.width > 100 and img.height > 100
    big = np.random.default_rng(0).standard_normal((5, 5, 1, 70)).astype(np.float32)
    fig = viz.show_filters(big, max_filters=10, ncols=5)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 10 and not panels[0].texts  # 5x5: no labels by default
    assert "first 10 shown" in fig._suptitle.get_text()


def test_filters_and_activations_of_a_trained_model(tmp_path):
    model = _model()
    x = np.random.default_rng(1).random((1, 8, 8, 1), dtype=np.float32)
    maps = model.feature_maps(x)
    viz.show_filters(model, path=tmp_path / "f.png")
    fig = viz.show_feature_maps(maps["conv2d"][0], path=tmp_path / "a.png")
    assert len([ax for ax in fig.axes if ax.images]) == 6
    assert (tmp_path / "f.png").is_file() and (tmp_path / "a.png").is_file()
