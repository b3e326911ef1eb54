"""``Dropout(rate, seed=)``: inverted dropout in training only, seeded by the layer or the model.

The layer sits between a Flatten and a Dense with the identity kernel and no
bias, so the model's training-mode output is the dropout mask applied to the
input, and can be compared element by element.
"""
from dataclasses import dataclass

import numpy as np
import pytest

from fastconv.models import Adam, Conv2D, Dense, Dropout, Flatten, MaxPooling2D, Sequential

SIZE = 400  # 20 x 20 x 1 inputs


@dataclass(frozen=True)
class DropoutCase:
    id: str
    rate: float


CASES = [DropoutCase("quarter", 0.25), DropoutCase("half", 0.5), DropoutCase("most", 0.9)]


def _probe(rate, model_seed, layer_seed=None):
    model = Sequential([Flatten(input_shape=(20, 20, 1)), Dropout(rate, seed=layer_seed),
                        Dense(SIZE, use_bias=False)], seed=model_seed)
    model.set_weights([np.eye(SIZE, dtype=np.float32)])
    model.compile("sgd", "mse")
    return model


def _train_out(model, x, steps=1):
    """The training-mode outputs of ``steps`` successive forward passes."""
    y = np.zeros((x.shape[0], SIZE), np.float32)
    return [model._value_and_grads(x, y, need_grads=False)[1] for _ in range(steps)]


def _inputs(rng, n=8):
    return rng.uniform(0.5, 2.0, (n, 20, 20, 1)).astype(np.float32)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_inverted_dropout_in_training_identity_at_inference(case, rng):
    x = _inputs(rng)
    model = _probe(case.rate, 0, layer_seed=1)
    (out,) = _train_out(model, x)
    flat = x.reshape(len(x), -1)
    kept = out != 0
    scale = np.float32(1 / (1 - case.rate))
    np.testing.assert_array_equal(out[kept], flat[kept] * scale)  # survivors scaled exactly
    dropped = 1 - kept.mean()
    sd = np.sqrt(case.rate * (1 - case.rate) / kept.size)
    assert abs(dropped - case.rate) < 5 * sd, (dropped, case.rate)
    np.testing.assert_array_equal(model.predict(x), flat)  # inference: pass-through
    loss = model.evaluate(x, flat)
    assert loss == 0.0


def test_a_layer_seed_fixes_the_masks_whatever_the_model_seed(rng):
    x = _inputs(rng)
    a = _train_out(_probe(0.5, model_seed=1, layer_seed=7), x, steps=2)
    b = _train_out(_probe(0.5, model_seed=2, layer_seed=7), x, steps=2)
    c = _train_out(_probe(0.5, model_seed=1, layer_seed=8), x, steps=2)
    for sa, sb in zip(a, b):
        np.testing.assert_array_equal(sa, sb)
    assert (a[0] != c[0]).any()       # another layer seed, other masks
    assert (a[0] != a[1]).any()       # the stream goes on from step to step


def test_without_a_layer_seed_the_model_seed_decides(rng):
    x = _inputs(rng)
    a = _train_out(_probe(0.5, model_seed=3), x, steps=2)
    b = _train_out(_probe(0.5, model_seed=3), x, steps=2)
    c = _train_out(_probe(0.5, model_seed=4), x, steps=2)
    for sa, sb in zip(a, b):
        np.testing.assert_array_equal(sa, sb)
    assert (a[0] != c[0]).any() and (a[0] != a[1]).any()


def _convnet(model_seed, layer_seed):
    model = Sequential([
        Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)), MaxPooling2D(2),
        Dropout(0.3, seed=layer_seed), Flatten(), Dense(16, activation="relu"), Dropout(0.5),
        Dense(3, activation="softmax")], seed=model_seed)
    model.compile(Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("layer_seed", [None, 11], ids=["model_seed", "layer_seed"])
def test_fit_with_dropout_is_bitwise_identical_for_any_thread_count(layer_seed, rng):
    x = rng.standard_normal((64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    runs = []
    for threads in (1, 2, 3):
        model = _convnet(5, layer_seed)
        hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, num_threads=threads)
        runs.append((hist.history["loss"], model.get_weights()))
    for loss, weights in runs[1:]:
        assert loss == runs[0][0]
        for a, b in zip(runs[0][1], weights):
            np.testing.assert_array_equal(a, b)
    other = _convnet(5, None if layer_seed is not None else 12)
    other.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert any((a != b).any() for a, b in zip(runs[0][1], other.get_weights()))


@pytest.mark.parametrize("kwargs, match", [
    ({"rate": 1.0}, r"rate must be a number in \[0, 1\); got 1.0"),
    ({"rate": True}, r"rate must be a number in \[0, 1\); got True"),
    ({"rate": 0.5, "seed": -1}, "seed must be None or an integer >= 0; got -1"),
    ({"rate": 0.5, "seed": 1.5}, "seed must be None or an integer >= 0; got 1.5"),
    ({"rate": 0.5, "noise_shape": (None, 1, 1, 4)}, "noise_shape=.* is not supported"),
], ids=["rate_one", "rate_bool", "seed_negative", "seed_float", "noise_shape"])
def test_bad_dropout_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Dropout(**kwargs)
