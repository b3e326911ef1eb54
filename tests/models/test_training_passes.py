"""The fast paths of a training pass, each against a slower way of getting the same numbers.

* The one-input-channel filter gradient (tap-major unfolding) against the
  NumPy reference backend, on geometries with strides, dilations, padding
  and several pieces, and bitwise across thread counts.
* A ReLU'd convolution feeding a max pool, whose gradient is masked and
  whose bias gradient is summed on the pooled side, against central
  differences in float64 (overlapping windows, SAME padding, no bias).
* The buffers a model keeps between passes: results returned by one pass are
  not overwritten by the next, and a pass after another batch size still
  gives a fresh model's gradients.
"""
import numpy as np
import pytest

import fastconv
from cases import FAST_BACKENDS, ConvCase, assert_close, params
from fastconv.models import Conv2D, Dense, Flatten, MaxPooling2D, ReLU, Sequential

ONE_CHANNEL = [
    ConvCase("c1-valid-lesson", 4, 28, 28, 1, 3, 3, 16),
    ConvCase("c1-same-stride2", 3, 17, 13, 1, 3, 5, 6, strides=2, padding="SAME"),
    ConvCase("c1-dilation2-same", 2, 20, 20, 1, 3, 3, 5, dilations=2, padding="SAME"),
    ConvCase("c1-stride-over-kernel", 3, 9, 9, 1, 2, 2, 4, strides=3),
    ConvCase("c1-explicit-pad", 2, 5, 6, 1, 3, 3, 3,
             padding=[[0, 0], [2, 1], [0, 3], [0, 0]]),
    # enough images for several pieces of the gradient product
    ConvCase("c1-many-pieces", 40, 28, 28, 1, 3, 3, 64),
    # one image taller than a piece: pieces are bands of output rows
    ConvCase("c1-row-bands", 1, 160, 240, 1, 3, 3, 32, padding="SAME"),
]


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("case", params(ONE_CHANNEL))
def test_one_channel_filter_gradient_matches_the_reference(case, backend, rng):
    x, w, _ = case.data(rng, np.float64)
    y = fastconv.conv2d(x, w, backend="numpy", **case.kwargs())
    dy = rng.standard_normal(y.shape)
    want = fastconv.conv2d_backward(x, w, dy, backend="numpy", need=["filters"],
                                    **case.kwargs())[1]
    got = [fastconv.conv2d_backward(x, w, dy, backend=backend, need=["filters"],
                                    num_threads=t, **case.kwargs())[1] for t in (1, 2)]
    reduction = case.N * y.shape[1] * y.shape[2]
    assert_close(got[0], want, scale=np.sqrt(reduction))
    np.testing.assert_array_equal(got[0], got[1])


def _pooled_relu_model(use_bias):
    return Sequential([
        Conv2D(3, 3, activation="relu", use_bias=use_bias, input_shape=(9, 8, 1)),
        MaxPooling2D(3, strides=1, padding="same"),   # overlapping windows
        Conv2D(4, 2, padding="same", use_bias=True),
        ReLU(),                                       # fused into the convolution
        MaxPooling2D(2, padding="same"),
        Flatten(),
        Dense(3, activation="softmax"),
    ], seed=11)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
def test_relu_conv_before_a_pool_against_central_differences(use_bias, rng):
    model = _pooled_relu_model(use_bias)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.standard_normal((4, 9, 8, 1))
    y = rng.integers(0, 3, 4)
    weights = [[rng.standard_normal(w.shape) * 0.7 for w in layer.weights]
               for layer in model.layers]
    _, _, grads = model._value_and_grads(x, y, weights)
    h = 1e-6
    for li, layer_w in enumerate(weights):
        for wi, w in enumerate(layer_w):
            for i in list(np.ndindex(w.shape))[::max(1, w.size // 10)]:
                old = w[i]
                w[i] = old + h
                up = model._value_and_grads(x, y, weights, need_grads=False)[0]
                w[i] = old - h
                down = model._value_and_grads(x, y, weights, need_grads=False)[0]
                w[i] = old
                np.testing.assert_allclose(grads[li][wi][i], (up - down) / (2 * h),
                                           rtol=1e-5, atol=1e-8,
                                           err_msg=f"layer {li} weight {wi} at {i}")


def _lesson_like(seed):
    model = Sequential([
        Conv2D(8, 3, activation="relu", input_shape=(12, 12, 1)), MaxPooling2D(2),
        Conv2D(8, 3, activation="relu"), MaxPooling2D(2), Flatten(),
        Dense(16, activation="relu"), Dense(10, activation="softmax"),
    ], seed=seed)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_kept_buffers_never_alias_returned_results(rng):
    model = _lesson_like(0)
    xa = rng.random((6, 12, 12, 1), dtype=np.float32)
    xb = rng.random((6, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 10, 6)
    _, pred_a, grads_a = model._value_and_grads(xa, y)
    kept = [g.copy() for gs in grads_a for g in gs], pred_a.copy()
    _, pred_b, grads_b = model._value_and_grads(xb, y)
    np.testing.assert_array_equal(pred_a, kept[1])
    for g, want in zip([g for gs in grads_a for g in gs], kept[0]):
        np.testing.assert_array_equal(g, want)
    assert not np.array_equal(pred_a, pred_b)


def test_a_pass_after_another_batch_size_equals_a_fresh_models(rng):
    x = rng.random((7, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 10, 7)
    used = _lesson_like(1)
    used._value_and_grads(x[:3], y[:3])          # buffers sized for 3 examples
    for n in (7, 3):
        loss, pred, grads = used._value_and_grads(x[:n], y[:n])
        fresh = _lesson_like(1)
        want_loss, want_pred, want_grads = fresh._value_and_grads(x[:n], y[:n])
        assert loss == want_loss
        np.testing.assert_array_equal(pred, want_pred)
        for gs, ws in zip(grads, want_grads):
            for g, w in zip(gs, ws):
                np.testing.assert_array_equal(g, w)
