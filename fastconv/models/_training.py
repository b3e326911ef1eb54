"""``compile`` / ``fit`` / ``evaluate`` / ``train_on_batch`` for :class:`fastconv.models.Sequential`."""
import sys
import time

import numpy as np

from .._threads import single_threaded_blas
from .._validation import positive_int
from . import losses as losses_mod, optimizers as optimizers_mod
from .callbacks import Callback

__all__ = ["History", "TrainingMixin"]


class History:
    """What :meth:`~fastconv.models.Sequential.fit` returns, like Keras's ``History``.

    Attributes
    ----------
    history : dict
        ``{"loss": [...], "accuracy": [...], "val_loss": [...], ...}``, one
        value per epoch.
    epoch : list of int
        The epochs run.
    params : dict
        ``epochs``, ``steps`` and ``verbose`` of the call.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.params = {}

    def _append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"<History epochs={len(self.epoch)} keys={list(self.history)}>"


def _metric_names(metrics):
    if metrics is None:
        return []
    if isinstance(metrics, str):
        metrics = [metrics]
    names = []
    for m in metrics:
        if not isinstance(m, str) or m.lower() not in ("accuracy", "acc"):
            raise ValueError(f"metrics may contain only 'accuracy' (or 'acc'); got {m!r}.")
        names.append("accuracy")
    return names


class TrainingMixin:
    """Training methods shared by the Keras-style models."""

    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Choose the optimizer, loss and metrics for :meth:`fit`, as ``keras.Model.compile``.

        Parameters
        ----------
        optimizer : str or Optimizer
            ``"sgd"``, ``"adam"``, ``"rmsprop"`` (Keras's defaults) or an
            object from :mod:`fastconv.models.optimizers`.
        loss : str or Loss
            ``"sparse_categorical_crossentropy"``, ``"categorical_crossentropy"``,
            ``"binary_crossentropy"``, ``"mse"`` or an object from
            :mod:`fastconv.models.losses`.
        metrics : list of str, optional
            ``["accuracy"]``: resolved, as Keras does, from the shapes of the
            labels and of the output (binary, sparse categorical or
            categorical accuracy).
        """
        if loss is None:
            raise ValueError("compile: loss is required for training; e.g. "
                             "loss='sparse_categorical_crossentropy'.")
        optimizer, loss = optimizers_mod.get(optimizer), losses_mod.get(loss)
        self._metric_names = _metric_names(metrics)
        self.optimizer, self.loss = optimizer, loss
        self._train_rng = None

    # ----------------------------------------------------------------- weight files
    def save_weights(self, path):
        """Write every weight to an ``.npz`` file, keyed ``"<layer name>/<index>"``.

        Parameters
        ----------
        path : str or path-like
            Must end in ``.npz``.
        """
        path = str(path)
        if not path.endswith(".npz"):
            raise ValueError(f"save_weights: path must end in '.npz'; got {path!r}.")
        self._ensure_built("save_weights")
        arrays = {f"{layer.name}/{i}": w for layer in self.layers
                  for i, w in enumerate(layer.weights)}
        np.savez(path, **arrays)

    def load_weights(self, path):
        """Read weights written by :meth:`save_weights`, checking layer names and shapes.

        Raises
        ------
        ValueError
            When the file's layers or weight shapes differ from the model's
            (the message names the first mismatch).
        """
        self._ensure_built("load_weights")
        with np.load(str(path)) as data:
            stored = {k: data[k] for k in data.files}
        expected = {f"{layer.name}/{i}": w.shape for layer in self.layers
                    for i, w in enumerate(layer.weights)}
        missing = [k for k in expected if k not in stored]
        extra = [k for k in stored if k not in expected]
        if missing or extra:
            raise ValueError(f"load_weights: {path!s} does not fit model {self.name!r}: "
                             f"missing {missing[:3]}, unexpected {extra[:3]} (weights are "
                             f"keyed '<layer name>/<index>').")
        for key, shape in expected.items():
            if stored[key].shape != shape:
                raise ValueError(f"load_weights: weight {key!r} has shape "
                                 f"{stored[key].shape} in {path!s}; the model expects "
                                 f"{shape}.")
        for layer in self.layers:
            layer.set_weights([stored[f"{layer.name}/{i}"] for i in range(len(layer.weights))])

    # ----------------------------------------------------------------- core
    def _check_compiled(self, what):
        if getattr(self, "loss", None) is None or not hasattr(self, "optimizer"):
            raise RuntimeError(f"{what}: the model must be compiled first; call "
                               f"model.compile(optimizer=..., loss=...).")

    def _rng_for_training(self):
        if getattr(self, "_train_rng", None) is None:
            self._train_rng = np.random.default_rng(self._rng.integers(2 ** 63))
        return self._train_rng

    def _targets(self, y, n, what):
        arr = np.asarray(y)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ValueError(f"{what}: x has {n} examples but y has "
                             f"{arr.shape[0] if arr.ndim else 'no batch axis'}; they must "
                             f"match.")
        return arr

    def _metrics(self, y, pred):
        out = {}
        for name in self._metric_names:
            fn = losses_mod.accuracy_metric(y, pred)
            out[name] = fn(y, pred)
        return out

    def _step(self, x, y, backend, num_threads):
        value, pred, grads = self._value_and_grads(x, y, backend=backend,
                                                   num_threads=num_threads)
        if not np.isfinite(value):
            return value, pred
        flat_w = [w for layer in self.layers for w in layer._weights]
        flat_g = [g for gs in grads for g in gs]
        self.optimizer.apply(flat_w, flat_g)
        return value, pred

    def train_on_batch(self, x, y, *, backend=None, num_threads=None):
        """One optimizer step on one batch; returns the loss (and metrics) before the step.

        Returns
        -------
        float or list of float
            The loss, or ``[loss, metric...]`` when metrics were compiled.
        """
        self._check_compiled("train_on_batch")
        x = self._as_input(x, "train_on_batch")
        y = self._targets(y, x.shape[0], "train_on_batch")
        with single_threaded_blas():
            value, pred = self._step(x, y, backend, num_threads)
        if not np.isfinite(value):
            raise FloatingPointError(f"train_on_batch: the loss is {value}; lower the learning "
                                     f"rate or check the inputs.")
        mets = self._metrics(y, pred)
        return value if not mets else [value] + [float(v.mean()) for v in mets.values()]

    def test_on_batch(self, x, y, *, backend=None, num_threads=None):
        """The loss (and metrics) on one batch, without training."""
        self._check_compiled("test_on_batch")
        x = self._as_input(x, "test_on_batch")
        y = self._targets(y, x.shape[0], "test_on_batch")
        with single_threaded_blas():
            value, pred, _ = self._value_and_grads(x, y, training=False, need_grads=False,
                                                   backend=backend, num_threads=num_threads)
        mets = self._metrics(y, pred)
        return value if not mets else [value] + [float(v.mean()) for v in mets.values()]

    def evaluate(self, x, y, batch_size=32, verbose=0, return_dict=False, *, backend=None,
                 num_threads=None):
        """Loss and metrics over a whole dataset, as ``keras.Model.evaluate``.

        Parameters
        ----------
        x : array_like, ``(N, H, W, C)``
        y : array_like
            Labels with ``N`` rows, in the form the loss expects.
        batch_size : int
        verbose : {0, 'auto', 1, 2}
            0 (the default) silent; 1 (``'auto'``, Keras's default) a progress
            bar as in :meth:`fit`; 2 one line with the results.
        return_dict : bool
            Return ``{"loss": ..., "accuracy": ...}`` instead of a list.

        Returns
        -------
        float, list of float or dict
        """
        self._check_compiled("evaluate")
        x = self._as_input(x, "evaluate")
        y = self._targets(y, x.shape[0], "evaluate")
        batch_size = positive_int(batch_size, "batch_size")
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"evaluate: verbose must be 'auto', 0, 1 or 2; got {verbose!r}.")
        progress = _Progress(1 if verbose == "auto" else verbose, -(-x.shape[0] // batch_size))
        try:
            logs = self._run_eval(x, y, batch_size, backend, num_threads, progress)
        except BaseException:
            progress.abort()
            raise
        progress.finish(dict(sorted(logs.items())))
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def _run_eval(self, x, y, batch_size, backend, num_threads, progress=None):
        total, sums, n = 0.0, {name: 0.0 for name in self._metric_names}, x.shape[0]
        with single_threaded_blas():
            for s in range(0, n, batch_size):
                xb, yb = x[s:s + batch_size], y[s:s + batch_size]
                value, pred, _ = self._value_and_grads(xb, yb, training=False, need_grads=False,
                                                       backend=backend, num_threads=num_threads)
                total += value * xb.shape[0]
                for name, v in self._metrics(yb, pred).items():
                    sums[name] += float(v.sum())
                if progress is not None:
                    seen = s + xb.shape[0]
                    progress.update({"loss": total / seen, **{k: v / seen
                                                              for k, v in sums.items()}})
        return {"loss": total / n, **{k: v / n for k, v in sums.items()}}

    def fit(self, x, y, batch_size=32, epochs=1, verbose="auto", validation_split=0.0,
            validation_data=None, shuffle=True, callbacks=None, initial_epoch=0, *,
            backend=None, num_threads=None):
        """Train for ``epochs`` passes over the data, as ``keras.Model.fit``.

        Parameters
        ----------
        x : array_like, ``(N, H, W, C)``
        y : array_like
            ``N`` labels in the form the loss expects.
        batch_size : int
            Default 32.
        epochs : int
        verbose : {'auto', 0, 1, 2}
            As Keras: 0 silent; 1 (``'auto'``) an ``Epoch i/n`` header and a
            progress bar (drawn with :mod:`tqdm`) updated after each batch with
            the elapsed time, the time per step and the running loss and
            metrics, whose final state stays on screen; 2 the header and one
            line per epoch with that final state.
        validation_split : float
            In ``[0, 1)``: the last fraction of ``x`` and ``y`` (taken before
            shuffling, as Keras does) is held out for validation.
        validation_data : tuple ``(x_val, y_val)``, optional
            Evaluated after each epoch (``val_loss``, ``val_accuracy``...);
            takes precedence over ``validation_split``.
        shuffle : bool
            Shuffle the examples before each epoch (with the model's seed).
        callbacks : list of Callback, optional
            See :mod:`fastconv.models.callbacks`.
        initial_epoch : int
            The epoch to start from (epochs run from ``initial_epoch`` to
            ``epochs - 1``, as in Keras).
        backend, num_threads
            As for :func:`fastconv.conv2d`.

        Returns
        -------
        History
            ``history.history`` holds ``loss``, the metrics and their
            ``val_`` counterparts, one value per epoch.

        Raises
        ------
        FloatingPointError
            When a batch's loss is not finite (the message names the epoch
            and the batch).
        """
        self._check_compiled("fit")
        x = self._as_input(x, "fit")
        y = self._targets(y, x.shape[0], "fit")
        batch_size = positive_int(batch_size, "batch_size")
        epochs = positive_int(epochs, "epochs")
        if verbose == "auto":
            verbose = 1
        if verbose not in (0, 1, 2):
            raise ValueError(f"fit: verbose must be 'auto', 0, 1 or 2; got {verbose!r}.")
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
                or not 0 <= validation_split < 1:
            raise ValueError(f"fit: validation_split must be a number in [0, 1); got "
                             f"{validation_split!r}.")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) \
                or not 0 <= initial_epoch < epochs:
            raise ValueError(f"fit: initial_epoch must be an integer in [0, epochs={epochs}); "
                             f"got {initial_epoch!r}.")
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"fit: callbacks must be fastconv.models.callbacks.Callback "
                                f"objects; got {type(cb).__name__}.")
        val = None
        if validation_split and validation_data is None:
            split_at = int(np.floor(x.shape[0] * (1.0 - validation_split)))
            if split_at in (0, x.shape[0]):
                raise ValueError(f"fit: validation_split={validation_split} leaves no "
                                 f"{'training' if split_at == 0 else 'validation'} examples "
                                 f"out of {x.shape[0]}.")
            val = (x[split_at:], y[split_at:])
            x, y = x[:split_at], y[:split_at]
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val).")
            xv = self._as_input(validation_data[0], "fit validation_data")
            val = (xv, self._targets(validation_data[1], xv.shape[0], "fit validation_data"))
        n = x.shape[0]
        steps = -(-n // batch_size)
        history = History()
        history.params = {"epochs": epochs, "steps": steps, "verbose": verbose}
        rng = self._rng_for_training()
        self.stop_training = False
        for cb in callbacks:
            cb.set_model(self)
            cb.set_params(history.params)
            cb.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            order = rng.permutation(n) if shuffle else None
            total, sums, seen = 0.0, {name: 0.0 for name in self._metric_names}, 0
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            progress = _Progress(verbose, steps)
            try:
                with single_threaded_blas():
                    for b in range(steps):
                        sl = slice(b * batch_size, (b + 1) * batch_size)
                        idx = order[sl] if order is not None else sl
                        xb, yb = x[idx], y[idx]
                        for cb in callbacks:
                            cb.on_train_batch_begin(b)
                            cb.on_batch_begin(b)
                        value, pred = self._step(xb, yb, backend, num_threads)
                        if not np.isfinite(value):
                            raise FloatingPointError(f"fit: the loss became {value} in epoch "
                                                     f"{epoch + 1}, batch {b + 1}; lower the "
                                                     f"learning rate or check the inputs.")
                        m = xb.shape[0]
                        total += value * m
                        seen += m
                        for name, v in self._metrics(yb, pred).items():
                            sums[name] += float(v.sum())
                        logs = {"loss": total / seen, **{k: v / seen for k, v in sums.items()}}
                        for cb in callbacks:
                            cb.on_train_batch_end(b, logs)
                            cb.on_batch_end(b, logs)
                        progress.update(logs)
                logs = {"loss": total / seen, **{k: v / seen for k, v in sums.items()}}
                logs = dict(sorted(logs.items()))  # Keras's order: accuracy, loss, val_...
                if val is not None:
                    vlogs = self._run_eval(val[0], val[1], batch_size, backend, num_threads)
                    logs.update({f"val_{k}": v for k, v in sorted(vlogs.items())})
            except BaseException:
                progress.abort()
                raise
            progress.finish(logs)
            history._append(epoch, logs)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end()
        return history


def _format_logs(logs):
    return "".join(f" - {k}: {v:.4f}" for k, v in sorted(logs.items()))


def _per_step(seconds, steps):
    t = seconds / max(steps, 1)
    return f"{t:.0f}s/step" if t >= 1 else f"{t * 1e3:.0f}ms/step" if t >= 1e-3 else \
        f"{t * 1e6:.0f}us/step"


def _summary_line(steps, seconds, logs):
    """Keras's ``verbose=2`` line: ``44/44 - 1s - 25ms/step - accuracy: ... - loss: ...``."""
    return f"{steps}/{steps} - {seconds:.0f}s - {_per_step(seconds, steps)}{_format_logs(logs)}"


class _Progress:
    """What ``fit`` and ``evaluate`` print for ``verbose`` 1 and 2, as Keras prints it.

    ``verbose=1`` draws a :mod:`tqdm` bar on standard output, updated after
    each batch (at most ten times a second) with the step count, the elapsed
    time, the time per step and the running loss and metrics; its final
    state stays on screen.  ``verbose=2`` prints only that final state, as
    one line.  ``verbose=0`` prints nothing.
    """

    _bar_class = None

    def __init__(self, verbose, steps):
        self.verbose, self.steps = verbose, steps
        self.start = time.perf_counter()
        self.bar = None
        if verbose == 1:
            self.bar = self._make_bar_class()(total=steps)

    @classmethod
    def _make_bar_class(cls):
        if cls._bar_class is None:
            from tqdm.std import tqdm

            class EpochBar(tqdm):
                monitor_interval = 0  # no monitor thread next to the training threads

                def __init__(self, total):
                    self.logs = {}
                    width = len(str(total))
                    super().__init__(total=total, file=sys.stdout, leave=True, ascii=" \u2501",
                                     unit="step", smoothing=0, dynamic_ncols=False,
                                     bar_format="{step:>" + str(width) + "}/{total_fmt} "
                                                "{bar:20} {elapsed_s:.0f}s {per_step}{logs}")

                @property
                def format_dict(self):
                    d = super().format_dict
                    n = d["n"]
                    d.update(step=n, per_step=_per_step(d["elapsed"], n) if n else "-",
                             logs=_format_logs(getattr(self, "logs", {})))
                    return d

            cls._bar_class = EpochBar
        return cls._bar_class

    def update(self, logs):
        """After a batch: the running ``logs``."""
        if self.bar is not None:
            self.bar.logs = logs
            self.bar.update(1)

    def finish(self, logs):
        """After the last batch (and validation): the epoch's ``logs``."""
        if self.bar is not None:
            self.bar.logs = logs
            self.bar.close()  # draws the final state once more, then a newline
            self.bar = None
        elif self.verbose == 2:
            print(_summary_line(self.steps, time.perf_counter() - self.start, logs), flush=True)

    def abort(self):
        """Close the bar where it stands (an exception ends the epoch)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
