"""fastconv.models training: optimizers, losses, layer and model gradients, Keras parity, digits.

Optimizer steps are judged by Keras 3's update formulas written out by hand;
losses and whole-model gradients by central differences in float64; one
``train_on_batch`` step by Keras itself when TensorFlow is installed.
"""
import numpy as np
import pytest

from cases import DTYPES, TOL, assert_close
from fastconv.models import (Activation, Adam, Callback, Conv2D, Dense, Dropout, EarlyStopping,
                             Flatten,
                             GlobalAveragePooling2D, History, MaxPooling2D, ReLU, RMSprop, SGD,
                             Sequential, Softmax, from_keras, losses, optimizers)

STEPS = 4


def _grads(rng, dtype, shape=(3, 4)):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(STEPS)]


# --------------------------------------------------------------------------- optimizers
def _keras_sgd(w, gs, lr, momentum, nesterov):
    m = np.zeros_like(w)
    for g in gs:
        if momentum:
            m = momentum * m - lr * g
            w = w + (momentum * m - lr * g if nesterov else m)
        else:
            w = w - lr * g
    return w


def _keras_adam(w, gs, lr, b1, b2, eps):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(gs, start=1):
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        w = w - alpha * m / (np.sqrt(v) + eps)
    return w


def _keras_rmsprop(w, gs, lr, rho, eps):
    v = np.zeros_like(w)
    for g in gs:
        v = rho * v + (1 - rho) * g * g
        w = w - lr * g / np.sqrt(v + eps)
    return w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt, expected", [
    (SGD(), lambda w, gs: _keras_sgd(w, gs, 0.01, 0.0, False)),
    (SGD(0.1, momentum=0.9), lambda w, gs: _keras_sgd(w, gs, 0.1, 0.9, False)),
    (SGD(0.1, momentum=0.5, nesterov=True), lambda w, gs: _keras_sgd(w, gs, 0.1, 0.5, True)),
    (Adam(), lambda w, gs: _keras_adam(w, gs, 0.001, 0.9, 0.999, 1e-7)),
    (Adam(0.01, 0.8, 0.99, 1e-3), lambda w, gs: _keras_adam(w, gs, 0.01, 0.8, 0.99, 1e-3)),
    (RMSprop(), lambda w, gs: _keras_rmsprop(w, gs, 0.001, 0.9, 1e-7)),
    (RMSprop(0.01, 0.5, 1e-2), lambda w, gs: _keras_rmsprop(w, gs, 0.01, 0.5, 1e-2)),
], ids=["sgd", "sgd_momentum", "sgd_nesterov", "adam", "adam_args", "rmsprop", "rmsprop_args"])
def test_optimizer_steps_follow_keras_formulas(opt, expected, dtype, rng):
    opt = type(opt)(**opt.get_config())  # a fresh copy per dtype
    w0 = rng.standard_normal((3, 4)).astype(dtype)
    gs = _grads(rng, dtype)
    w = w0.copy()
    for g in gs:
        opt.apply([w], [g])
    assert opt.iterations == STEPS and w.dtype == dtype
    want = expected(w0.astype(np.float64), [g.astype(np.float64) for g in gs])
    assert_close(w, want, dtype, scale=10)


def test_optimizer_defaults_and_names_are_keras():
    assert SGD().get_config() == {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False}
    assert Adam().get_config() == {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                                   "epsilon": 1e-7}
    assert RMSprop().get_config() == {"learning_rate": 0.001, "rho": 0.9, "epsilon": 1e-7}
    assert isinstance(optimizers.get("Adam"), Adam)
    with pytest.raises(ValueError, match="learning_rate"):
        SGD(learning_rate=-1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        optimizers.get("adagrad")


# --------------------------------------------------------------------------- losses
def _numeric_grad(f, p, h=1e-6):
    g = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        up, down = p.copy(), p.copy()
        up[i] += h
        down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


def _loss_cases(rng):
    n, k = 5, 4
    labels = rng.integers(0, k, n)
    onehot = np.eye(k)[labels]
    logits = rng.standard_normal((n, k)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    bin_t = rng.integers(0, 2, (n, 3)).astype(np.float64)
    bin_z = rng.standard_normal((n, 3))
    bin_p = 1 / (1 + np.exp(-bin_z))
    return [
        (losses.SparseCategoricalCrossentropy(), labels, probs, logits),
        (losses.SparseCategoricalCrossentropy(from_logits=True), labels, logits, None),
        (losses.CategoricalCrossentropy(), onehot, probs, logits),
        (losses.CategoricalCrossentropy(from_logits=True), onehot, logits, None),
        (losses.BinaryCrossentropy(), bin_t, bin_p, bin_z),
        (losses.BinaryCrossentropy(from_logits=True), bin_t, bin_z, None),
        (losses.MeanSquaredError(), rng.standard_normal((n, 3)), rng.standard_normal((n, 3)), None),
    ]


def test_each_loss_and_gradient_against_central_differences(rng):
    for loss, t, pred, logits in _loss_cases(rng):
        value, grad = loss.value_and_grad(t, pred)
        num = _numeric_grad(lambda p: loss.value_and_grad(t, p)[0], pred)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8, err_msg=repr(loss))
        if logits is not None:  # the fused gradient on the logits, same value
            lv, lg = loss.value_and_logit_grad(t, logits)
            # on probabilities Keras adds 1e-7 inside the logs: equal to about 1e-7
            np.testing.assert_allclose(lv, value, rtol=1e-6, err_msg=repr(loss))
            num = _numeric_grad(lambda z: loss.value_and_logit_grad(t, z)[0], logits)
            np.testing.assert_allclose(lg, num, rtol=1e-6, atol=1e-8, err_msg=repr(loss))


def test_loss_values_are_keras_formulas(rng):
    loss, labels, probs, logits = _loss_cases(rng)[0]
    want = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    np.testing.assert_allclose(losses.sparse_categorical_crossentropy(labels, probs), want,
                               rtol=1e-12)
    np.testing.assert_allclose(losses.sparse_categorical_crossentropy(labels, logits, True),
                               want, rtol=1e-12)
    t, p = np.array([[1.0, 0.0]]), np.array([[0.8, 0.4]])
    bce = -(np.log(0.8 + 1e-7) + np.log(1 - 0.4 + 1e-7)) / 2
    np.testing.assert_allclose(losses.binary_crossentropy(t, p), bce, rtol=1e-12)
    np.testing.assert_allclose(losses.mse(t, p), np.mean((t - p) ** 2), rtol=1e-12)


def test_fused_softmax_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1000.0, -1000.0, 0.0]], np.float32)
    value, grad = losses.CategoricalCrossentropy().value_and_logit_grad([[0, 1, 0]], z)
    assert np.isfinite(value) and np.isclose(value, 2000.0)
    np.testing.assert_allclose(grad, [[1.0, -1.0, 0.0]], atol=1e-6)


def test_loss_rejects_bad_labels():
    p = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        losses.sparse_categorical_crossentropy([0, 3], p)
    with pytest.raises(ValueError, match="expected integer labels of shape"):
        losses.sparse_categorical_crossentropy([[0, 1, 0], [1, 0, 0]], p)
    with pytest.raises(ValueError, match="expected the model output's shape"):
        losses.categorical_crossentropy([0, 1], p)
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.get("hinge")


# --------------------------------------------------------------------------- model gradients
def _model_a():
    return Sequential([
        Conv2D(4, 3, padding="same", activation="relu", input_shape=(7, 6, 2)),
        Conv2D(6, (2, 3), strides=(1, 2), dilation_rate=1, use_bias=True),
        ReLU(),  # fused into the convolution above
        MaxPooling2D(2, padding="same"),
        Flatten(),
        Dense(8, activation="tanh"),
        Dropout(0.3),
        Dense(5, activation="softmax"),
    ], seed=3)


def _model_b():
    return Sequential([
        Conv2D(4, 3, dilation_rate=2, groups=2, activation="sigmoid", input_shape=(8, 8, 2)),
        Activation("relu"),
        GlobalAveragePooling2D(),
        Dense(6),
        Activation("tanh"),
        Dense(3),
        Softmax(),
    ], seed=4)


def _model_c():
    return Sequential([
        Conv2D(3, 3, strides=2, input_shape=(9, 9, 2)),
        ReLU(max_value=0.8, negative_slope=0.1, threshold=-0.2),
        MaxPooling2D(3, strides=1, padding="same"),
        Flatten(),
        Dense(4, activation="relu"),
        Dense(2, activation="sigmoid"),
    ], seed=5)


@pytest.mark.parametrize("make, loss, kind", [
    (_model_c, "binary_crossentropy", "binary"),
    (_model_c, losses.BinaryCrossentropy(from_logits=True), "binary"),
    (_model_a, "sparse_categorical_crossentropy", "sparse"),
    (_model_a, losses.CategoricalCrossentropy(), "onehot"),
    (_model_b, "categorical_crossentropy", "onehot"),
    (_model_b, "mse", "onehot"),
], ids=["leaky_clipped_relu_bce", "bce_from_logits", "convnet_sparse", "convnet_onehot",
        "dilated_groups_softmax_layer", "mse"])
def test_whole_model_gradient_against_central_differences_float64(make, loss, kind, rng):
    model = make()
    model.compile("sgd", loss)
    shape = model.input_shape[1:]
    x = rng.standard_normal((3, *shape))
    k = model.output_shape[-1]
    labels = rng.integers(0, k, 3)
    y = {"sparse": labels, "onehot": np.eye(k)[labels],
         "binary": rng.integers(0, 2, (3, k)).astype(np.float64)}[kind]
    weights = [[rng.standard_normal(w.shape) * 0.5 for w in layer.weights]
               for layer in model.layers]

    def loss_at(ws):
        model._train_rng = np.random.default_rng(7)  # the same dropout mask every time
        return model._value_and_grads(x, y, ws)

    _, _, grads = loss_at(weights)
    h = 1e-6
    for li, layer_w in enumerate(weights):
        for wi, w in enumerate(layer_w):
            assert grads[li][wi].shape == w.shape
            for i in list(np.ndindex(w.shape))[::max(1, w.size // 12)]:
                old = w[i]
                w[i] = old + h
                up = loss_at(weights)[0]
                w[i] = old - h
                down = loss_at(weights)[0]
                w[i] = old
                np.testing.assert_allclose(grads[li][wi][i], (up - down) / (2 * h), rtol=1e-5,
                                           atol=1e-8, err_msg=f"layer {li} weight {wi} at {i}")


def test_dropout_is_inverted_and_only_active_in_training(rng):
    model = Sequential([Flatten(input_shape=(10, 10, 1)), Dropout(0.5), Dense(1)], seed=0)
    model.compile("sgd", "mse")
    x = np.ones((50, 10, 10, 1), np.float32)
    model.set_weights([np.ones((100, 1), np.float32), np.zeros(1, np.float32)])
    _, train_pred, _ = model._value_and_grads(x, np.zeros((50, 1)), need_grads=False)
    _, test_pred, _ = model._value_and_grads(x, np.zeros((50, 1)), training=False,
                                             need_grads=False)
    np.testing.assert_array_equal(test_pred, 100)
    assert abs(train_pred.mean() - 100) < 5 and train_pred.std() > 1


# --------------------------------------------------------------------------- fit / evaluate API
def _tiny(seed=0):
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(6, 6, 1)), MaxPooling2D(2),
                        Flatten(), Dense(3, activation="softmax")], seed=seed)
    model.compile(Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_fit_history_evaluate_and_batch_methods(rng, capsys):
    x = rng.standard_normal((40, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = _tiny()
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=(x[:8], y[:8]))
    assert isinstance(hist, History) and hist.epoch == [0, 1]
    assert list(hist.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]  # Keras's
    assert all(len(v) == 2 for v in hist.history.values())
    assert capsys.readouterr().out == ""
    loss, acc = model.evaluate(x, y)
    assert np.isclose(model.evaluate(x[:8], y[:8])[0], model.test_on_batch(x[:8], y[:8])[0])
    assert 0 <= acc <= 1 and np.isfinite(loss)
    before = model.get_weights()
    out = model.train_on_batch(x[:8], y[:8])
    assert len(out) == 2 and any((a != b).any() for a, b in zip(before, model.get_weights()))
    model.fit(x, y, epochs=1, verbose=2)
    assert "Epoch 1/1" in capsys.readouterr().out


def test_fit_is_reproducible_with_a_seed(rng):
    x = rng.standard_normal((40, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    a, b = _tiny(5), _tiny(5)
    a.fit(x, y, batch_size=8, epochs=2, verbose=0)
    b.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_accuracy_resolves_as_keras_does(rng):
    x = rng.standard_normal((10, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 10)
    sparse = _tiny()
    onehot = _tiny()
    onehot.compile("sgd", "categorical_crossentropy", ["accuracy"])
    assert np.isclose(sparse.evaluate(x, y)[1], onehot.evaluate(x, np.eye(3)[y])[1])
    binary = Sequential([Flatten(input_shape=(6, 6, 1)), Dense(1, activation="sigmoid")], seed=0)
    binary.compile("sgd", "binary_crossentropy", ["accuracy"])
    yb = (rng.random(10) > 0.5).astype(np.float32)[:, None]
    pred = binary(x)
    assert np.isclose(binary.evaluate(x, yb)[1], np.mean((pred > 0.5) == (yb > 0.5)))


def test_training_errors_are_clear(rng):
    x = rng.standard_normal((4, 6, 6, 1)).astype(np.float32)
    fresh = Sequential([Flatten(input_shape=(6, 6, 1)), Dense(3)])
    with pytest.raises(RuntimeError, match="must be compiled first"):
        fresh.fit(x, [0, 1, 2, 0])
    model = _tiny()
    with pytest.raises(ValueError, match="x has 4 examples but y has 3"):
        model.fit(x, [0, 1, 2], verbose=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        model.train_on_batch(x, [0, 1, 2, 5])
    with pytest.raises(ValueError, match="loss is required"):
        model.compile("sgd")
    with pytest.raises(ValueError, match="metrics may contain only"):
        model.compile("sgd", "mse", ["auc"])
    bad = np.full_like(x, np.nan)
    with pytest.raises(FloatingPointError, match="epoch 1, batch 1"):
        model.fit(bad, [0, 1, 2, 0], verbose=0)


def test_validation_split_holds_out_the_last_examples(rng):
    x = rng.standard_normal((30, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    model = _tiny()
    hist = model.fit(x, y, epochs=1, verbose=0, validation_split=0.25)  # floor(30 * 0.75) = 22
    loss, acc = model.evaluate(x[22:], y[22:])
    assert np.isclose(hist.history["val_loss"][0], loss)
    assert np.isclose(hist.history["val_accuracy"][0], acc)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, validation_split=1.0)


def test_callbacks_hooks_and_early_stopping(rng):
    x = rng.standard_normal((24, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 24)

    class Record(Callback):
        def __init__(self):
            super().__init__()
            self.calls = []

        def on_train_begin(self, logs=None):
            self.calls.append("train_begin")

        def on_epoch_end(self, epoch, logs=None):
            self.calls.append(("epoch", epoch, sorted(logs)))

        def on_batch_end(self, batch, logs=None):
            self.calls.append("batch")

        def on_train_end(self, logs=None):
            self.calls.append("train_end")

    rec = Record()
    model = _tiny()
    model.fit(x, y, batch_size=12, epochs=3, initial_epoch=1, verbose=0, callbacks=[rec])
    assert rec.model is model and rec.calls[0] == "train_begin" and rec.calls[-1] == "train_end"
    assert [c[1] for c in rec.calls if isinstance(c, tuple)] == [1, 2]
    assert rec.calls.count("batch") == 4

    class Worse(Callback):  # a monitored value that never improves after epoch 0
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = float(epoch)

    model = _tiny()
    stop = EarlyStopping(monitor="score", patience=2, restore_best_weights=True)
    first = {}

    class Keep(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                first["w"] = self.model.get_weights()

    hist = model.fit(x, y, epochs=10, verbose=0, callbacks=[Worse(), Keep(), stop])
    assert hist.epoch == [0, 1, 2] and stop.stopped_epoch == 2  # Keras stops after 2 bad epochs
    for a, b in zip(model.get_weights(), first["w"]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="monitor='val_loss' is not among"):
        _tiny().fit(x, y, verbose=0, callbacks=[EarlyStopping()])


def test_save_and_load_weights_round_trip_and_check_shapes(tmp_path, rng):
    a, b = _tiny(1), _tiny(2)
    path = tmp_path / "w.npz"
    a.save_weights(path)
    b.load_weights(path)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    other = Sequential([Conv2D(5, 3, activation="relu", input_shape=(6, 6, 1)), MaxPooling2D(2),
                        Flatten(), Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match=r"weight 'conv2d/0' has shape \(3, 3, 1, 4\)"):
        other.load_weights(path)
    renamed = Sequential([Flatten(input_shape=(6, 6, 1)), Dense(3)])
    with pytest.raises(ValueError, match="does not fit model"):
        renamed.load_weights(path)
    with pytest.raises(ValueError, match="must end in '.npz'"):
        a.save_weights(tmp_path / "w.h5")


# --------------------------------------------------------------------------- Keras parity
@pytest.mark.parametrize("opt", ["sgd", "adam", "rmsprop"])
def test_one_train_on_batch_step_matches_keras(tf, opt, rng):
    import keras
    L = keras.layers
    kmodel = keras.Sequential([
        keras.Input((8, 8, 1)), L.Conv2D(6, 3, activation="relu", padding="same"),
        L.MaxPooling2D(2), L.Conv2D(8, 3, activation="relu"), L.Flatten(),
        L.Dense(16, activation="relu"), L.Dense(10, activation="softmax")])
    kmodel.set_weights([(rng.standard_normal(w.shape) * 0.3).astype(np.float32)
                        for w in kmodel.get_weights()])
    model = from_keras(kmodel)
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    kopt = {"sgd": lambda: keras.optimizers.SGD(0.1), "adam": lambda: keras.optimizers.Adam(),
            "rmsprop": lambda: keras.optimizers.RMSprop()}[opt]()
    mine = {"sgd": lambda: SGD(0.1), "adam": Adam, "rmsprop": RMSprop}[opt]()
    kmodel.compile(kopt, "sparse_categorical_crossentropy")
    model.compile(mine, "sparse_categorical_crossentropy")
    for _ in range(2):
        kloss = float(kmodel.train_on_batch(x, y))
        loss = model.train_on_batch(x, y)
        np.testing.assert_allclose(loss, kloss, rtol=1e-4)
    for got, want in zip(model.get_weights(), kmodel.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opt", ["sgd", "adam", "rmsprop"])
def test_ten_fit_steps_match_keras_fit(tf, opt, rng):
    """Same weights, data and batch order (shuffle=False): 10 steps of each optimizer."""
    import keras
    L = keras.layers
    kmodel = keras.Sequential([
        keras.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(10, activation="softmax")])
    kmodel.set_weights([(rng.standard_normal(w.shape) * 0.3).astype(np.float32)
                        for w in kmodel.get_weights()])
    model = from_keras(kmodel)
    x = rng.random((100, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 100)
    make = {"sgd": (lambda: keras.optimizers.SGD(0.05, momentum=0.9), lambda: SGD(0.05, 0.9)),
            "adam": (keras.optimizers.Adam, Adam),
            "rmsprop": (keras.optimizers.RMSprop, RMSprop)}[opt]
    kmodel.compile(make[0](), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.compile(make[1](), "sparse_categorical_crossentropy", metrics=["accuracy"])
    kh = kmodel.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0,
                    validation_split=0.5).history
    h = model.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0,
                  validation_split=0.5).history
    assert list(h) == list(kh)
    for key in kh:
        np.testing.assert_allclose(h[key], kh[key], rtol=1e-4, atol=1e-6, err_msg=key)
    for got, want in zip(model.get_weights(), kmodel.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fit_is_bitwise_identical_for_any_thread_count(rng):
    x = rng.standard_normal((48, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 48)
    runs = []
    for threads in (1, 2, 3):
        model = _tiny(9)
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, num_threads=threads)
        runs.append(model.get_weights())
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- real data
def test_training_on_digits_reaches_high_accuracy():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    train, test = slice(0, 1400), slice(1400, None)
    model = Sequential([
        Conv2D(16, 3, activation="relu", padding="same", input_shape=(8, 8, 1)),
        MaxPooling2D(2),
        Conv2D(32, 3, activation="relu", padding="same"),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(10, activation="softmax"),
    ], seed=0)
    model.compile(Adam(0.003), "sparse_categorical_crossentropy", ["accuracy"])
    hist = model.fit(x[train], y[train], batch_size=32, epochs=3, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    _, acc = model.evaluate(x[test], y[test])
    assert acc >= 0.95, acc
