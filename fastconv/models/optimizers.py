"""Optimizers with Keras 3's update rules and defaults: :class:`SGD`, :class:`Adam`, :class:`RMSprop`.

An optimizer keeps one slot array per weight (created on the first
:meth:`Optimizer.apply`) and updates the weights in place::

    >>> import numpy as np
    >>> from fastconv.models.optimizers import SGD
    >>> w = np.ones(2, np.float32)
    >>> SGD(learning_rate=0.5).apply([w], [np.array([1.0, -1.0], np.float32)])
    >>> w
    array([0.5, 1.5], dtype=float32)
"""
import numbers

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "get"]


def _real(value, what, where, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{where}: {what} must be a finite number; got {value!r}.")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{where}: {what} must be {bound}; got {value!r}.")
    if high is not None and value > high:
        raise ValueError(f"{where}: {what} must be <= {high}; got {value!r}.")
    return value


class Optimizer:
    """Base class: slot variables per weight and an ``iterations`` counter.

    Parameters
    ----------
    learning_rate : float
        Step size (> 0).

    Attributes
    ----------
    iterations : int
        Number of :meth:`apply` calls so far (Keras's ``optimizer.iterations``).
    """

    def __init__(self, learning_rate):
        self.learning_rate = _real(learning_rate, "learning_rate", type(self).__name__, 0,
                                   low_open=True)
        self.iterations = 0
        self._slots = None
        self._scratch = {}

    def _slot_names(self):
        return ()

    def apply(self, weights, grads):
        """Update ``weights`` in place from ``grads`` (lists in the same order).

        Parameters
        ----------
        weights : list of ndarray
            Updated in place.
        grads : list of ndarray
            One gradient per weight, of the same shape.
        """
        weights, grads = list(weights), list(grads)
        if len(weights) != len(grads):
            raise ValueError(f"{type(self).__name__}.apply: got {len(weights)} weights and "
                             f"{len(grads)} gradients; expected one gradient per weight.")
        for w, g in zip(weights, grads):
            if np.shape(g) != w.shape:
                raise ValueError(f"{type(self).__name__}.apply: a gradient has shape "
                                 f"{np.shape(g)}; expected its weight's shape {w.shape}.")
        if self._slots is None or len(self._slots) != len(weights):
            self._slots = [{name: np.zeros_like(w) for name in self._slot_names()}
                           for w in weights]
        for w, g, slots in zip(weights, grads, self._slots):
            self._update(w, np.asarray(g, dtype=w.dtype), slots)
        self.iterations += 1

    def _update(self, w, g, slots):
        raise NotImplementedError

    def _temp(self, w, k=0):
        """Scratch array ``k`` of ``w``'s shape and dtype, kept between steps.

        The updates run in place through these (NumPy's ``out=``), in the same
        order of operations as the formulas in the docstrings, so that no
        step allocates weight-sized temporaries.
        """
        key = (w.shape, w.dtype.str, k)
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = np.empty_like(w)
        return buf

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_scratch"] = {}
        return state

    def get_config(self):
        """The constructor arguments, as a dict."""
        return {"learning_rate": self.learning_rate}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Gradient descent with optional (Nesterov) momentum, as ``keras.optimizers.SGD``.

    Without momentum ``w -= lr * g``; with it ``m = momentum * m - lr * g``
    then ``w += m`` (or ``w += momentum * m - lr * g`` with ``nesterov``).

    Parameters
    ----------
    learning_rate : float
        Default 0.01.
    momentum : float
        In ``[0, 1]``; default 0.
    nesterov : bool
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        super().__init__(learning_rate)
        self.momentum = _real(momentum, "momentum", "SGD", 0, 1)
        self.nesterov = bool(nesterov)

    def _slot_names(self):
        return ("momentum",) if self.momentum else ()

    def _update(self, w, g, slots):
        lr = w.dtype.type(self.learning_rate)
        lr_g = np.multiply(lr, g, out=self._temp(w))
        if not self.momentum:
            w -= lr_g
            return
        mu = w.dtype.type(self.momentum)
        m = slots["momentum"]
        m *= mu
        m -= lr_g
        if self.nesterov:
            step = np.multiply(mu, m, out=self._temp(w, 1))
            step -= lr_g
            w += step
        else:
            w += m

    def get_config(self):
        return {"learning_rate": self.learning_rate, "momentum": self.momentum,
                "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam, as ``keras.optimizers.Adam``.

    At step ``t`` (from 1): ``m += (g - m) * (1 - beta_1)``,
    ``v += (g**2 - v) * (1 - beta_2)``,
    ``w -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + epsilon)``.

    Parameters
    ----------
    learning_rate : float
        Default 0.001.
    beta_1, beta_2 : float
        In ``[0, 1)``; defaults 0.9 and 0.999.
    epsilon : float
        Default 1e-7 (Keras's, not the paper's 1e-8).
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        self.beta_1 = _real(beta_1, "beta_1", "Adam", 0, 1)
        self.beta_2 = _real(beta_2, "beta_2", "Adam", 0, 1)
        if self.beta_1 == 1 or self.beta_2 == 1:
            raise ValueError(f"Adam: beta_1 and beta_2 must be < 1; got {beta_1!r}, {beta_2!r}.")
        self.epsilon = _real(epsilon, "epsilon", "Adam", 0)

    def _slot_names(self):
        return ("m", "v")

    def _update(self, w, g, slots):
        t = self.iterations + 1
        f = w.dtype.type
        lr = f(self.learning_rate) * np.sqrt(1 - f(self.beta_2) ** t) / (1 - f(self.beta_1) ** t)
        m, v = slots["m"], slots["v"]
        a, b = self._temp(w), self._temp(w, 1)
        np.subtract(g, m, out=a)                # m += (g - m) * (1 - beta_1)
        a *= 1 - f(self.beta_1)
        m += a
        np.square(g, out=a)                     # v += (g**2 - v) * (1 - beta_2)
        a -= v
        a *= 1 - f(self.beta_2)
        v += a
        np.multiply(f(lr), m, out=a)            # w -= lr * m / (sqrt(v) + epsilon)
        np.sqrt(v, out=b)
        b += f(self.epsilon)
        a /= b
        w -= a

    def get_config(self):
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1,
                "beta_2": self.beta_2, "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop, as ``keras.optimizers.RMSprop`` (no momentum, not centred).

    ``v = rho * v + (1 - rho) * g**2`` then ``w -= lr * g / sqrt(v + epsilon)``
    (Keras adds ``epsilon`` under the square root).

    Parameters
    ----------
    learning_rate : float
        Default 0.001.
    rho : float
        In ``[0, 1)``; default 0.9.
    epsilon : float
        Default 1e-7.
    """

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7):
        super().__init__(learning_rate)
        self.rho = _real(rho, "rho", "RMSprop", 0, 1)
        if self.rho == 1:
            raise ValueError(f"RMSprop: rho must be < 1; got {rho!r}.")
        self.epsilon = _real(epsilon, "epsilon", "RMSprop", 0)

    def _slot_names(self):
        return ("velocity",)

    def _update(self, w, g, slots):
        f = w.dtype.type
        v = slots["velocity"]
        a, b = self._temp(w), self._temp(w, 1)
        v *= f(self.rho)                        # v = rho * v + (1 - rho) * g**2
        np.square(g, out=a)
        a *= 1 - f(self.rho)
        v += a
        np.multiply(f(self.learning_rate), g, out=a)  # w -= lr * g / sqrt(v + epsilon)
        np.add(v, f(self.epsilon), out=b)
        np.sqrt(b, out=b)
        a /= b
        w -= a

    def get_config(self):
        return {"learning_rate": self.learning_rate, "rho": self.rho, "epsilon": self.epsilon}


_BY_NAME = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


def get(identifier):
    """An optimizer from a name (``"sgd"``, ``"adam"``, ``"rmsprop"``, Keras defaults) or object."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"optimizer must be one of {', '.join(repr(n) for n in _BY_NAME)} or a "
                     f"fastconv.models.optimizers.Optimizer; got {identifier!r}.")
