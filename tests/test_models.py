"""fastconv.models: Keras-style Sequential models -- summary, weights, predict, from_keras.

Counts come from the lesson (Keras's own summary of the Fashion-MNIST model);
predictions are judged by real Keras and by fastconv's NumPy reference backend.
"""
import importlib
import os
import re

import numpy as np
import pytest

import fastconv
from fastconv import models
from fastconv.models import (Activation, Conv2D, Dense, Flatten, GlobalAveragePooling2D,
                             Input, MaxPooling2D, ReLU, Sequential, Softmax)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REQUIRE_ORACLES = os.environ.get("FASTCONV_REQUIRE_ORACLES", "") not in ("", "0")
BACKENDS = fastconv.available_backends()

# the lesson's Keras summary of the Fashion-MNIST model
FASHION_SHAPES = [(26, 26, 64), (13, 13, 64), (11, 11, 64), (5, 5, 64), (1600,), (128,), (10,)]
FASHION_PARAMS = [640, 0, 36928, 0, 0, 204928, 1290]
CARS_SIZE = 32  # a small IMAGE_SIZE keeps the cars model quick


def fashion_model(seed=0):
    return Sequential([
        Conv2D(64, 3, activation="relu", input_shape=(28, 28, 1)),
        MaxPooling2D(2),
        Conv2D(64, 3, activation="relu"),
        MaxPooling2D(2),
        Flatten(),
        Dense(128, activation="relu"),
        Dense(10, activation="softmax"),
    ], seed=seed)


def _keras():
    try:
        return importlib.import_module("keras")
    except ImportError as exc:
        if REQUIRE_ORACLES:
            pytest.fail(f"FASTCONV_REQUIRE_ORACLES is set but keras is missing: {exc}")
        pytest.skip("keras is not installed")


@pytest.fixture(scope="module")
def keras():
    return _keras()


def _randomize(kmodel, seed):
    """Random kernels at Keras's scale and random (non-zero) biases, so bias order matters."""
    rng = np.random.default_rng(seed)
    new = []
    for w in kmodel.get_weights():
        if w.ndim == 1:
            new.append(rng.normal(0, 0.1, w.shape).astype(np.float32))
        else:
            fan_in = int(np.prod(w.shape[:-1]))
            new.append(rng.normal(0, np.sqrt(2.0 / fan_in), w.shape).astype(np.float32))
    kmodel.set_weights(new)
    return kmodel


@pytest.fixture(scope="module")
def keras_fashion(keras):
    L = keras.layers
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10, activation="softmax"),
    ])
    return _randomize(m, 1)


@pytest.fixture(scope="module")
def keras_cars(keras):
    L = keras.layers
    conv = dict(padding="same", activation="relu")
    m = keras.Sequential([
        keras.Input((CARS_SIZE, CARS_SIZE, 3)),
        L.Conv2D(16, 3, **conv), L.Conv2D(30, 3, **conv), L.MaxPooling2D(2),
        L.Conv2D(60, 3, **conv), L.MaxPooling2D(2),
        L.Conv2D(90, 3, **conv), L.MaxPooling2D(2),
        L.Conv2D(110, 3, **conv), L.MaxPooling2D(2),
        L.Conv2D(130, 3, **conv), L.Conv2D(40, 1, **conv),
        L.GlobalAveragePooling2D(), L.Dense(5, activation="softmax"),
    ])
    return _randomize(m, 2)


@pytest.fixture(scope="module")
def keras_zoo(keras):
    """Every supported layer and activation, with non-default arguments."""
    L = keras.layers
    m = keras.Sequential([
        keras.Input((9, 10, 2)),
        L.Conv2D(4, 3, padding="same"), L.ReLU(),
        L.Conv2D(6, (2, 3), strides=2, activation="tanh"), L.Activation("sigmoid"),
        L.MaxPooling2D(3, strides=1, padding="same"),
        L.ReLU(max_value=0.6, negative_slope=0.1, threshold=0.55),
        L.Conv2D(6, 2, dilation_rate=2, groups=2, padding="same", use_bias=False),
        L.Activation("relu"),
        L.Flatten(), L.Dense(7, activation="sigmoid"), L.Dropout(0.5), L.Dense(4), L.Softmax(),
    ])
    return _randomize(m, 3)


def _images(shape, seed=5):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# --------------------------------------------------------------------------- summary, shapes
def test_fashion_summary_matches_the_lesson():
    model = fashion_model()
    assert [layer.output_shape for layer in model.layers] == FASHION_SHAPES
    assert [layer.count_params() for layer in model.layers] == FASHION_PARAMS
    assert model.count_params() == 243786
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    rows = [line for line in lines if re.match(r"^\w+ \(\w+\) ", line) and "Param" not in line]
    assert len(rows) == 7
    for row, shape, params in zip(rows, FASHION_SHAPES, FASHION_PARAMS):
        assert "(None, " + ", ".join(map(str, shape)) + ")" in row
        assert int(row.split()[-1].replace(",", "")) == params
    assert "Total params: 243,786" in text
    names = [layer.name for layer in model.layers]
    assert names == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "flatten",
                     "dense", "dense_1"]


def test_build_with_batch_axis_and_input_layer():
    m = Sequential([Conv2D(64, 3, activation="relu"), MaxPooling2D(2),
                    Conv2D(64, 3, activation="relu"), MaxPooling2D(2), Flatten(),
                    Dense(128, activation="relu"), Dense(10, "softmax")])
    assert not m.built
    with pytest.raises(ValueError, match="build"):
        m.summary()
    m.build((None, 28, 28, 1))
    assert m.count_params() == 243786
    assert m.input_shape == (None, 28, 28, 1) and m.output_shape == (None, 10)
    m2 = Sequential([Input((28, 28, 1))])
    for layer in fashion_model().layers:
        m2.add(type(layer)(**_ctor_args(layer)))
    assert m2.count_params() == 243786


def _ctor_args(layer):
    if isinstance(layer, Conv2D):
        return dict(filters=layer.filters, kernel_size=layer.kernel_size,
                    activation=layer.activation)
    if isinstance(layer, MaxPooling2D):
        return dict(pool_size=layer.pool_size)
    if isinstance(layer, Dense):
        return dict(units=layer.units, activation=layer.activation)
    return {}


@pytest.mark.oracle
def test_cars_model_shapes_and_counts_match_keras(keras_cars):
    conv = dict(padding="same", activation="relu")
    ours = Sequential([
        Conv2D(16, 3, input_shape=(CARS_SIZE, CARS_SIZE, 3), **conv), Conv2D(30, 3, **conv),
        MaxPooling2D(2), Conv2D(60, 3, **conv), MaxPooling2D(2), Conv2D(90, 3, **conv),
        MaxPooling2D(2), Conv2D(110, 3, **conv), MaxPooling2D(2), Conv2D(130, 3, **conv),
        Conv2D(40, 1, **conv), GlobalAveragePooling2D(), Dense(5, activation="softmax")])
    assert ours.count_params() == keras_cars.count_params()
    assert [(None, *layer.output_shape) for layer in ours.layers] == \
        [tuple(layer.output.shape) for layer in keras_cars.layers]
    assert [layer.count_params() for layer in ours.layers] == \
        [layer.count_params() for layer in keras_cars.layers]


# --------------------------------------------------------------------------- weights
@pytest.mark.oracle
def test_weight_order_is_keras_order(keras_fashion):
    ours = fashion_model()
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in keras_fashion.get_weights()]
    # conv kernel HWIO then bias; dense kernel (in, out) then bias
    shapes = [w.shape for w in ours.get_weights()]
    assert shapes[:2] == [(3, 3, 1, 64), (64,)] and shapes[4:6] == [(1600, 128), (128,)]


def test_glorot_uniform_initialisation_and_seed():
    a, b, c = fashion_model(seed=1), fashion_model(seed=1), fashion_model(seed=2)
    for wa, wb, wc in zip(a.get_weights(), b.get_weights(), c.get_weights()):
        np.testing.assert_array_equal(wa, wb)
        assert wa.dtype == np.float32
        if wa.ndim == 1:
            assert not wa.any()  # zero biases
            continue
        assert not np.array_equal(wa, wc)
        receptive = int(np.prod(wa.shape[:-2])) if wa.ndim == 4 else 1
        limit = np.sqrt(6.0 / (receptive * (wa.shape[-2] + wa.shape[-1])))
        assert np.abs(wa).max() <= limit
        assert np.abs(wa).max() > 0.9 * limit
        if wa.size > 10000:  # uniform(-l, l) has standard deviation l / sqrt(3)
            assert wa.std() == pytest.approx(limit / np.sqrt(3), rel=0.03)


def test_set_weights_round_trip_and_errors():
    model = fashion_model()
    new = [np.full(w.shape, i, np.float64) for i, w in enumerate(model.get_weights())]
    model.set_weights(new)
    got = model.get_weights()
    assert all(g.dtype == np.float32 and np.all(g == i) for i, g in enumerate(got))
    got[0][...] = 99  # copies: the model is unchanged
    assert model.get_weights()[0][0, 0, 0, 0] == 0
    with pytest.raises(ValueError, match="8 weight arrays"):
        model.set_weights(new[:-1])
    bad = list(new)
    bad[2] = np.zeros((3, 3, 64, 65))
    with pytest.raises(ValueError, match=r"\(3, 3, 64, 64\)"):
        model.set_weights(bad)


# --------------------------------------------------------------------------- parity with Keras
@pytest.mark.oracle
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["fashion", "cars", "zoo"])
def test_from_keras_predicts_like_keras(which, backend, keras_fashion, keras_cars, keras_zoo):
    kmodel = {"fashion": keras_fashion, "cars": keras_cars, "zoo": keras_zoo}[which]
    x = _images((13, *kmodel.input_shape[1:]))
    expected = np.asarray(kmodel.predict(x, batch_size=32, verbose=0))
    ours = models.from_keras(kmodel)
    assert [layer.name for layer in ours.layers] == [layer.name for layer in kmodel.layers]
    got = ours.predict(x, batch_size=5, backend=backend)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(ours(x, backend=backend), expected, rtol=1e-4, atol=2e-6)


@pytest.mark.oracle
def test_hand_built_model_with_keras_weights_predicts_like_keras(keras_fashion):
    # the other direction: our layers + Keras's weight list -- checks Flatten's (h, w, c) order
    ours = fashion_model()
    ours.set_weights(keras_fashion.get_weights())
    x = _images((9, 28, 28, 1), seed=8)
    np.testing.assert_allclose(ours.predict(x), keras_fashion.predict(x, verbose=0), rtol=1e-4,
                               atol=2e-6)


@pytest.mark.oracle
def test_feature_maps_match_keras_layer_outputs(keras, keras_zoo):
    ours = models.from_keras(keras_zoo)
    x = _images((2, 9, 10, 2), seed=9)
    maps = ours.feature_maps(x)
    assert list(maps) == [layer.name for layer in keras_zoo.layers]
    probe = keras.Model(keras_zoo.inputs, [layer.output for layer in keras_zoo.layers])
    for (name, got), want in zip(maps.items(), probe.predict(x, verbose=0)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6, err_msg=name)


# --------------------------------------------------------------------------- NumPy-reference checks
def test_predict_matches_the_reference_backend_and_is_batch_invariant():
    model = fashion_model(seed=3)
    x = _images((11, 28, 28, 1), seed=10)
    ref = model.predict(x, batch_size=32, backend="numpy")
    for backend in BACKENDS:
        np.testing.assert_allclose(model.predict(x, batch_size=4, backend=backend), ref,
                                   rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model(x), ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ref.sum(axis=1), 1, rtol=1e-5)  # softmax rows


def test_predict_reuses_its_workspace_without_aliasing_results():
    """predict keeps layer outputs between calls; returned arrays never share them."""
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(9, 9, 2)), MaxPooling2D(2),
                        Conv2D(3, 2, padding="same")], seed=5)
    x1, x2 = _images((6, 9, 9, 2), seed=1), _images((6, 9, 9, 2), seed=2)
    y1 = model.predict(x1, batch_size=4)
    y1_before = y1.copy()
    y2 = model.predict(x2, batch_size=4)
    np.testing.assert_array_equal(y1, y1_before)
    assert not np.shares_memory(y1, y2)
    for x, y in ((x1, y1), (x2, y2)):
        np.testing.assert_allclose(y, model.predict(x, batch_size=6, backend="numpy"),
                                   rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(model(x1), model(x1))


def test_feature_maps_are_each_layer_in_turn():
    model = Sequential([Conv2D(3, 3, input_shape=(8, 8, 1)), ReLU(), MaxPooling2D(2), Flatten(),
                        Dense(4), Softmax()], seed=4)
    x = _images((1, 8, 8, 1), seed=11) - 0.5
    maps = model.feature_maps(x[0])  # one example without the batch axis is accepted
    k, b = model.layers[0].get_weights()
    conv = fastconv.conv2d(x, k, bias=b, backend="numpy")
    np.testing.assert_allclose(maps["conv2d"], conv, rtol=1e-5, atol=1e-6)
    assert (maps["conv2d"] < 0).any()  # the ReLU after it did not change it in place
    np.testing.assert_array_equal(maps["re_lu"], np.maximum(maps["conv2d"], 0))
    np.testing.assert_allclose(maps["softmax"], model.predict(x), rtol=1e-6)
    assert maps["flatten"].shape == (1, 27)  # 8x8 -> 6x6 (3x3 valid) -> 3x3, 3 channels


def test_predict_does_not_modify_its_input():
    model = Sequential([ReLU(input_shape=(4, 4, 2)), Activation("tanh")])
    x = _images((3, 4, 4, 2)) - 0.5
    before = x.copy()
    y = model.predict(x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(y, np.tanh(np.maximum(before, 0)), rtol=1e-6)
    model = Sequential([Flatten(input_shape=(4, 4, 2)), Softmax()])
    model.predict(x)
    np.testing.assert_array_equal(x, before)


def test_linear_conv_then_relu_layer_is_fused_correctly():
    a = Sequential([Conv2D(5, 3, padding="same", input_shape=(7, 7, 3)), ReLU()], seed=6)
    b = Sequential([Conv2D(5, 3, padding="same", activation="relu", input_shape=(7, 7, 3))])
    b.set_weights(a.get_weights()[:1] + [np.linspace(-1, 1, 5)])
    a.set_weights(b.get_weights())
    x = _images((2, 7, 7, 3)) - 0.5
    np.testing.assert_allclose(a.predict(x), b.predict(x), rtol=1e-6)
    assert (a.predict(x) == 0).any()


# --------------------------------------------------------------------------- errors
def test_unsupported_arguments_are_named():
    with pytest.raises(ValueError, match="'elu'.*relu"):
        Conv2D(8, 3, activation="elu")
    with pytest.raises(ValueError, match="channels_first"):
        Conv2D(8, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="padding"):
        MaxPooling2D(2, padding="full")
    with pytest.raises(ValueError, match="kernel_initializer"):
        Dense(3, kernel_initializer="orthogonal")
    with pytest.raises(TypeError, match="Conv2D filters"):
        Conv2D(2.5, 3)


def test_model_usage_errors():
    with pytest.raises(TypeError, match="from_keras"):
        Sequential([object()])
    with pytest.raises(ValueError, match="first layer"):
        Sequential([Dense(3, input_shape=(4,)), Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match="too small"):
        Sequential([Conv2D(2, 5, input_shape=(3, 3, 1))])
    model = fashion_model()
    with pytest.raises(ValueError, match=r"\(None, 28, 28, 1\)"):
        model.predict(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        model.predict(np.array([["a"]]))
    with pytest.raises(ValueError, match="inference"):
        model(np.zeros((1, 28, 28, 1), np.float32), training=True)


@pytest.mark.oracle
def test_from_keras_errors_name_the_layer(keras):
    L = keras.layers
    bn = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(2, 3), L.BatchNormalization(name="bn")])
    with pytest.raises(ValueError, match=r"'bn' \(BatchNormalization\).*Conv2D"):
        models.from_keras(bn)
    elu = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(2, 3, activation="elu", name="c")])
    with pytest.raises(ValueError, match=r"'c'.*'elu'"):
        models.from_keras(elu)
    first = keras.Sequential([keras.Input((2, 6, 6)), L.Conv2D(2, 3, data_format="channels_first",
                                                               name="cf")])
    with pytest.raises(ValueError, match=r"'cf'.*channels_first"):
        models.from_keras(first)
    with pytest.raises(ValueError, match="built"):
        models.from_keras(keras.Sequential([L.Dense(3)]))
    with pytest.raises(TypeError, match="Keras model"):
        models.from_keras(object())
