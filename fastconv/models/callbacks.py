"""Callbacks for :meth:`fastconv.models.Sequential.fit`, with Keras's hook names.

Subclass :class:`Callback` and override any hook; ``fit`` sets
``callback.model`` before training and stops after the epoch in which a
callback sets ``model.stop_training = True``.
"""
import numpy as np

__all__ = ["Callback", "EarlyStopping"]


class Callback:
    """Base class: every hook does nothing.

    Attributes
    ----------
    model : Sequential
        The model being trained (set by ``fit``).
    params : dict
        ``epochs``, ``steps`` and ``verbose`` of the ``fit`` call.
    """

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = dict(params)

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_batch_begin(self, batch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass


class EarlyStopping(Callback):
    """Stop training when a monitored value has stopped improving, as Keras's ``EarlyStopping``.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs; default ``"val_loss"``.
    min_delta : float
        The smallest change that counts as an improvement.
    patience : int
        Stop once this many epochs in a row brought no improvement.
    mode : {'auto', 'min', 'max'}
        ``auto`` maximises names containing ``acc``, minimises the rest.
    restore_best_weights : bool
        Put back the weights of the best epoch when training stops early.

    Attributes
    ----------
    stopped_epoch : int
        The epoch (from 0) after which training stopped; 0 when it did not.
    best : float
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max'; got "
                             f"{mode!r}.")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) \
                or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an integer >= 0; got "
                             f"{patience!r}.")
        self.monitor = str(monitor)
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        if mode == "auto":
            mode = "max" if "acc" in self.monitor else "min"
        self.mode = mode

    def _better(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = np.inf if self.mode == "min" else -np.inf
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping: monitor={self.monitor!r} is not among the epoch "
                             f"logs {sorted(logs)}; pass validation data for val_ keys.")
        value = float(logs[self.monitor])
        self.wait += 1
        if self._better(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None \
                and self.stopped_epoch > 0:
            self.model.set_weights(self.best_weights)
