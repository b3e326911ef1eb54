"""The training rows: one optimizer step of the lesson model on a fixed batch.

Each engine trains the lesson's Fashion-MNIST model (:data:`..suite.LESSON_MODEL_LAYERS`)
from the same weights on the same seeded batch of 28x28x1 images with integer
labels: sparse categorical cross-entropy, Adam with learning rate 1e-3 and
Keras's epsilon 1e-7.  A timed call is one step -- forward pass, loss,
gradients and the weight update -- of

* fastconv: :meth:`fastconv.models.Sequential.train_on_batch`;
* ``keras-train``: Keras's ``model.train_on_batch`` (TensorFlow tensors in);
* ``torch-train`` / ``torch-cl-train``: a plain PyTorch step (``zero_grad``,
  ``cross_entropy`` on the logits, ``backward``, ``torch.optim.Adam.step``) on
  NCHW or channels_last tensors.

The result checked against the reference is the model's prediction on the
batch after the first step, which depends on the loss, every gradient and
the optimizer's rule.
"""
import importlib
import importlib.util

import numpy as np

from ..suite import lesson_model_weights
from . import Prepared
from .pytorch import TorchEngine
from .tensorflow_keras import TensorFlowEngine, _numpy, keras_lesson_model

__all__ = ["LEARNING_RATE", "EPSILON", "train_data", "train_reference", "fastconv_train_step",
           "KerasTrainEngine", "TorchTrainEngine"]

LEARNING_RATE = 1e-3
EPSILON = 1e-7


def train_data(case, seed=0):
    """Seeded images in [0, 1], labels 0-9 and the lesson model's starting weights."""
    rng = np.random.default_rng(seed)
    return {"x": rng.random(case.input_shape, dtype=np.float32),
            "y": rng.integers(0, 10, case.N).astype(np.int64),
            "weights": lesson_model_weights(seed)}


def _fastconv_model(data):
    from ... import models
    from .fastconv_backends import fastconv_lesson_model
    model = fastconv_lesson_model(data["weights"])
    model.compile(models.Adam(LEARNING_RATE, epsilon=EPSILON), "sparse_categorical_crossentropy")
    return model


def train_reference(case, data):
    """Predictions after one step, computed by fastconv's NumPy backend."""
    model = _fastconv_model(data)
    model.train_on_batch(data["x"], data["y"], backend="numpy")
    return model.predict(data["x"], batch_size=case.N, backend="numpy")


def fastconv_train_step(case, data, backend, threads):
    """A :class:`Prepared` running ``train_on_batch`` of a fastconv backend."""
    model = _fastconv_model(data)
    x, y = data["x"], data["y"]
    return Prepared(lambda: model.train_on_batch(x, y, backend=backend, num_threads=threads),
                    lambda _: model.predict(x, batch_size=case.N, backend=backend,
                                            num_threads=threads))


class KerasTrainEngine(TensorFlowEngine):
    """Keras's ``train_on_batch`` on the lesson model (TensorFlow backend)."""
    name = "keras-train"

    def supports(self, case):
        return case.op == "train" and importlib.util.find_spec("keras") is not None

    def prepare(self, case, data):
        tf = self.library
        keras = importlib.import_module("keras")
        model = keras_lesson_model(data["weights"])
        model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE, epsilon=EPSILON),
                      loss="sparse_categorical_crossentropy")
        x, y = tf.constant(data["x"]), tf.constant(data["y"])
        return Prepared(lambda: model.train_on_batch(x, y),
                        lambda _: _numpy(model(x, training=False)))


class TorchTrainEngine(TorchEngine):
    """A plain PyTorch training step on NCHW or channels_last tensors."""

    def __init__(self, channels_last=False):
        super().__init__(channels_last)
        self.name = "torch-cl-train" if channels_last else "torch-train"

    def supports(self, case):
        return case.op == "train"

    def prepare(self, case, data):
        torch = self.library
        nn, F = torch.nn, torch.nn.functional
        model = nn.Sequential(nn.Conv2d(1, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
        k1, b1, k2, b2, d1, c1, d2, c2 = data["weights"]
        # Keras flattens (h, w, c); PyTorch flattens (c, h, w): reorder the first Dense's rows
        d1 = d1.reshape(5, 5, 64, 128).transpose(2, 0, 1, 3).reshape(1600, 128)
        params = [k1.transpose(3, 2, 0, 1), b1, k2.transpose(3, 2, 0, 1), b2, d1.T, c1, d2.T, c2]
        with torch.no_grad():
            for p, v in zip(model.parameters(), params):
                p.copy_(torch.from_numpy(np.ascontiguousarray(v)))
        x = self._tensor(np.ascontiguousarray(data["x"].transpose(0, 3, 1, 2)))
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        y = torch.from_numpy(data["y"])
        opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=EPSILON)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss

        def result(_):
            with torch.no_grad():
                return torch.softmax(model(x), dim=1).numpy()
        return Prepared(step, result)
