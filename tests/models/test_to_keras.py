"""Sequential.to_keras(): a fastconv model (trained or not) handed back to Keras."""
import sys

import numpy as np
import pytest

from fastconv.models import (Activation, Adam, Conv2D, Dense, Dropout, Flatten,
                             GlobalAveragePooling2D, MaxPooling2D, ReLU, Sequential, Softmax,
                             from_keras)


def _lesson_model(seed=0):
    return Sequential([
        Conv2D(8, 3, activation="relu", input_shape=(12, 12, 1)),
        MaxPooling2D(2),
        Conv2D(8, 3, activation="relu"),
        MaxPooling2D(2),
        Flatten(),
        Dense(16, activation="relu"),
        Dropout(0.25),
        Dense(10, activation="softmax"),
    ], seed=seed)


def _zoo(seed=0):
    return Sequential([
        Conv2D(6, (3, 2), strides=(2, 1), padding="same", dilation_rate=1, input_shape=(9, 10, 4),
               activation="tanh"),
        ReLU(max_value=0.8, negative_slope=0.1, threshold=0.05),
        Conv2D(6, 3, padding="same", dilation_rate=2, groups=2, use_bias=False),
        Activation("sigmoid"),
        MaxPooling2D(2, strides=1, padding="same"),
        GlobalAveragePooling2D(),
        Dense(5),
        Softmax(),
    ], seed=seed)


@pytest.mark.parametrize("make", [_lesson_model, _zoo])
def test_to_keras_predicts_like_fastconv(tf, make):
    model = make()
    rng = np.random.default_rng(3)
    for w in model.layers:  # non-zero biases, so their order matters
        if w.weights and len(w.weights) == 2:
            w.set_weights([w.weights[0], rng.normal(0, 0.1, w.weights[1].shape)])
    x = rng.random((7, *model.input_shape[1:]), dtype=np.float32)
    kmodel = model.to_keras()
    assert [layer.name for layer in kmodel.layers] == [layer.name for layer in model.layers]
    assert kmodel.count_params() == model.count_params()
    for a, b in zip(kmodel.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(kmodel.predict(x, verbose=0), model.predict(x), rtol=1e-4,
                               atol=1e-5)
    # and back again
    back = from_keras(kmodel)
    np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)


def test_a_trained_model_goes_to_keras_with_the_same_predictions(tf):
    model = _lesson_model()
    rng = np.random.default_rng(0)
    x = rng.random((64, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    model.compile(Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    kmodel = model.to_keras(name="handed_back")
    assert kmodel.name == "handed_back"
    np.testing.assert_allclose(kmodel.predict(x, verbose=0), model.predict(x), rtol=1e-4,
                               atol=1e-5)
    kmodel.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, _ = kmodel.evaluate(x, y, verbose=0)
    model_loss, _ = model.evaluate(x, y)
    assert loss == pytest.approx(model_loss, rel=1e-4)


def test_to_keras_errors(monkeypatch):
    with pytest.raises(ValueError, match="to_keras"):
        Sequential([Dense(3)]).to_keras()
    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(ImportError, match="pip install keras"):
        _lesson_model().to_keras()


def test_a_dropout_seed_survives_the_trip_to_keras_and_back(tf):
    model = Sequential([Dense(4, input_shape=(3,)), Dropout(0.5, seed=7), Dense(2)], seed=0)
    keras_model = model.to_keras()
    keras_dropout = [l for l in keras_model.layers if l.__class__.__name__ == "Dropout"][0]
    assert keras_dropout.get_config()["seed"] == 7
    back = from_keras(keras_model)
    assert [l.seed for l in back.layers if isinstance(l, Dropout)] == [7]
