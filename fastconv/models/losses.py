"""Losses as Keras 3 computes them, each with its gradient, and the ``accuracy`` metrics.

Every loss averages its per-example value over the batch (Keras's
``"sum_over_batch_size"`` reduction).  :meth:`Loss.value_and_grad` returns the
loss and its gradient with respect to the predictions; when the model ends in
a softmax (or sigmoid) and the loss is the matching cross-entropy on
probabilities, :meth:`Loss.value_and_logit_grad` instead works from the
logits, as Keras's TensorFlow backend does: the loss is computed with a
log-sum-exp and the gradient is ``(softmax(z) - y) / N``, stable for any logits.
"""
import numpy as np

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy",
           "BinaryCrossentropy", "MeanSquaredError", "sparse_categorical_crossentropy",
           "categorical_crossentropy", "binary_crossentropy", "mse", "get",
           "accuracy_metric"]

#: Keras's ``backend.epsilon()``, used to clip probabilities
EPSILON = 1e-7


def _pred(y_pred):
    p = np.asarray(y_pred)
    if p.dtype.kind != "f":
        p = p.astype(np.float32)
    return p


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class Loss:
    """Base class of the losses.

    Parameters
    ----------
    from_logits : bool
        Whether predictions are logits rather than probabilities (the
        cross-entropies only).
    """

    name = "loss"
    #: the output activation whose logits this loss can use directly
    logit_activation = None

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def targets(self, y_true, y_pred):
        """``y_true`` checked against the predictions' shape and cast to their dtype."""
        t = np.asarray(y_true)
        if t.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: y has dtype {t.dtype}; expected numbers.")
        if t.shape != y_pred.shape:
            raise ValueError(f"{self.name}: y has shape {t.shape}; expected the model output's "
                             f"shape {y_pred.shape}.")
        return t.astype(y_pred.dtype, copy=False)

    def __call__(self, y_true, y_pred):
        """The loss value (a float)."""
        return self.value_and_grad(y_true, y_pred)[0]

    def value_and_grad(self, y_true, y_pred):
        """``(loss, dloss/dy_pred)`` for predictions as given."""
        raise NotImplementedError

    def value_and_logit_grad(self, y_true, logits):
        """``(loss, dloss/dlogits)`` when the predictions are ``activation(logits)``."""
        raise NotImplementedError

    def get_config(self):
        return {"from_logits": self.from_logits}

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class CategoricalCrossentropy(Loss):
    """``-sum(y * log(p))`` over the last axis, ``y`` one-hot (or any distribution).

    On probabilities Keras first rescales ``p`` to sum to 1 and clips it to
    ``[1e-7, 1 - 1e-7]``; this does the same (and its gradient).
    """

    name = "categorical_crossentropy"
    logit_activation = "softmax"

    def _onehot(self, y_true, y_pred):
        return self.targets(y_true, y_pred)

    def value_and_grad(self, y_true, y_pred):
        p = _pred(y_pred)
        t = self._onehot(y_true, p)
        if self.from_logits:
            return self.value_and_logit_grad(t, p, _checked=True)
        n = p.shape[0]
        s = p.sum(axis=-1, keepdims=True)
        q = p / s
        qc = np.clip(q, EPSILON, 1 - EPSILON)
        loss = float(-(t * np.log(qc)).sum() / n)
        gq = np.where((q >= EPSILON) & (q <= 1 - EPSILON), -t / qc, 0).astype(p.dtype) / n
        grad = (gq - (gq * q).sum(axis=-1, keepdims=True)) / s
        return loss, grad.astype(p.dtype, copy=False)

    def value_and_logit_grad(self, y_true, logits, _checked=False):
        z = _pred(logits)
        t = y_true if _checked else self._onehot(y_true, z)
        n = z.shape[0]
        logp = _log_softmax(z)
        loss = float(-(t * logp).sum() / n)
        grad = (np.exp(logp) * t.sum(axis=-1, keepdims=True) - t) / n
        return loss, grad.astype(z.dtype, copy=False)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer class labels ``(N,)`` (or ``(N, 1)``)."""

    name = "sparse_categorical_crossentropy"

    def _onehot(self, y_true, y_pred):
        y = np.asarray(y_true)
        k = y_pred.shape[-1]
        if y.ndim == y_pred.ndim and y.shape[-1] == 1:
            y = y[..., 0]
        if y.shape != y_pred.shape[:-1]:
            raise ValueError(f"{self.name}: y has shape {np.shape(y_true)}; expected integer "
                             f"labels of shape {y_pred.shape[:-1]} (one class index per "
                             f"example).")
        if y.dtype.kind == "f":
            if not np.all(y == np.round(y)):
                raise ValueError(f"{self.name}: y must hold integer class labels; got "
                                 f"non-integer values.")
        elif y.dtype.kind not in "iub":
            raise TypeError(f"{self.name}: y has dtype {y.dtype}; expected integer labels.")
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"{self.name}: labels must be in [0, {k - 1}] for {k} outputs; got "
                             f"values from {y.min()} to {y.max()}.")
        t = np.zeros(y_pred.shape, dtype=y_pred.dtype)
        np.put_along_axis(t, y[..., None], 1, axis=-1)
        return t


class BinaryCrossentropy(Loss):
    """Mean over the last axis of ``-(y log p + (1 - y) log(1 - p))``.

    On probabilities Keras clips ``p`` to ``[1e-7, 1 - 1e-7]`` and adds 1e-7
    inside each log; this does the same.
    """

    name = "binary_crossentropy"
    logit_activation = "sigmoid"

    def value_and_grad(self, y_true, y_pred):
        p = _pred(y_pred)
        t = self.targets(y_true, p)
        if self.from_logits:
            return self.value_and_logit_grad(t, p)
        m = p.size
        pc = np.clip(p, EPSILON, 1 - EPSILON)
        loss = float(-(t * np.log(pc + EPSILON) + (1 - t) * np.log(1 - pc + EPSILON)).sum() / m)
        g = -(t / (pc + EPSILON) - (1 - t) / (1 - pc + EPSILON)) / m
        g = np.where((p >= EPSILON) & (p <= 1 - EPSILON), g, 0)
        return loss, g.astype(p.dtype, copy=False)

    def value_and_logit_grad(self, y_true, logits):
        z = _pred(logits)
        t = self.targets(y_true, z)
        m = z.size
        loss = float((np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).sum() / m)
        sig = np.exp(-np.logaddexp(0, -z))
        return loss, ((sig - t) / m).astype(z.dtype, copy=False)


class MeanSquaredError(Loss):
    """Mean over the last axis of ``(y - p)**2``."""

    name = "mean_squared_error"

    def __init__(self):
        super().__init__(False)

    def value_and_grad(self, y_true, y_pred):
        p = _pred(y_pred)
        t = self.targets(y_true, p)
        d = p - t
        return float(np.square(d).sum() / p.size), (2 * d / p.size).astype(p.dtype, copy=False)

    def get_config(self):
        return {}

    def __repr__(self):
        return "MeanSquaredError()"


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    """The batch-mean sparse categorical cross-entropy (a float)."""
    return SparseCategoricalCrossentropy(from_logits)(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False):
    """The batch-mean categorical cross-entropy (a float)."""
    return CategoricalCrossentropy(from_logits)(y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits=False):
    """The mean binary cross-entropy (a float)."""
    return BinaryCrossentropy(from_logits)(y_true, y_pred)


def mse(y_true, y_pred):
    """The mean squared error (a float)."""
    return MeanSquaredError()(y_true, y_pred)


_BY_NAME = {"sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
            "categorical_crossentropy": CategoricalCrossentropy,
            "binary_crossentropy": BinaryCrossentropy,
            "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError}


def get(identifier):
    """A :class:`Loss` from a name (Keras's) or a loss object."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"loss must be one of {', '.join(repr(n) for n in _BY_NAME)} or a "
                     f"fastconv.models.losses.Loss; got {identifier!r}.")


# --------------------------------------------------------------------------- metrics
def binary_accuracy(y_true, y_pred, threshold=0.5):
    """Per-example mean of ``(y_pred > threshold) == y_true``."""
    hit = (np.asarray(y_pred) > threshold) == (np.asarray(y_true).reshape(np.shape(y_pred)) > 0.5)
    return hit.reshape(hit.shape[0], -1).mean(axis=-1)


def categorical_accuracy(y_true, y_pred):
    """Per-example ``argmax(y_true) == argmax(y_pred)``."""
    return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float64)


def sparse_categorical_accuracy(y_true, y_pred):
    """Per-example ``y_true == argmax(y_pred)``."""
    y = np.asarray(y_true)
    if y.ndim == np.ndim(y_pred):
        y = y[..., 0]
    return (y.astype(np.int64) == np.argmax(y_pred, axis=-1)).astype(np.float64)


def accuracy_metric(y_true, y_pred):
    """The accuracy Keras picks for ``"accuracy"`` from the shapes of ``y`` and the output.

    Binary when the output has one unit, sparse categorical when ``y`` has
    fewer axes than the output (or a last axis of 1), categorical otherwise.
    """
    t_shape, p_shape = np.shape(y_true), np.shape(y_pred)
    if p_shape[-1] == 1:
        return binary_accuracy
    if len(t_shape) < len(p_shape) or t_shape[-1] == 1:
        return sparse_categorical_accuracy
    return categorical_accuracy
