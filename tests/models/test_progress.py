"""What ``fit`` and ``evaluate`` print for ``verbose`` 0, 1 and 2 (Keras's formats).

Keras 3 prints, per epoch, an ``Epoch i/n`` header and then either a
progress bar updated after each batch (``verbose=1``) or its final state as
one line (``verbose=2``: ``steps/steps - 1s - 25ms/step - accuracy: ...``);
``verbose=0`` prints nothing.  The printed numbers must be the ones
``History`` records.
"""
import re
import time
from dataclasses import dataclass

import numpy as np
import pytest

from fastconv.models import Adam, Callback, Conv2D, Dense, Flatten, MaxPooling2D, Sequential

BAR = "\u2501" * 20  # a full bar: 20 heavy horizontal lines, as Keras draws it
STEP_TIME = r"\d+(?:us|ms|s)/step"


@dataclass(frozen=True)
class ProgressCase:
    id: str
    n: int
    batch_size: int
    validation: bool

    @property
    def steps(self):
        n_train = self.n - (self.n // 4 if self.validation else 0)
        return -(-n_train // self.batch_size)


CASES = [ProgressCase("three_steps_validation", 40, 10, True),
         ProgressCase("twelve_steps_ragged_last", 45, 4, False)]


def _model(seed=0):
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(6, 6, 1)), MaxPooling2D(2),
                        Flatten(), Dense(3, activation="softmax")], seed=seed)
    model.compile(Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n, rng):
    return rng.standard_normal((n, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, n)


def _fit(case, verbose, rng, **kw):
    x, y = _data(case.n, rng)
    return _model().fit(x, y, batch_size=case.batch_size, epochs=2, verbose=verbose,
                        validation_split=0.25 if case.validation else 0.0, **kw)


def _logs_text(history, epoch):
    keys = sorted(history.history)  # Keras's order: accuracy, loss, val_accuracy, val_loss
    return "".join(f" - {k}: {history.history[k][epoch]:.4f}" for k in keys)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_verbose_0_prints_nothing(case, rng, capsys):
    _fit(case, 0, rng)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_verbose_2_prints_one_line_per_epoch(case, rng, capsys):
    history = _fit(case, 2, rng)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines
    for epoch in range(2):
        assert lines[2 * epoch] == f"Epoch {epoch + 1}/2"
        want = (rf"{case.steps}/{case.steps} - \d+s - {STEP_TIME}"
                + re.escape(_logs_text(history, epoch)))
        assert re.fullmatch(want, lines[2 * epoch + 1]), lines[2 * epoch + 1]
    assert "\r" not in "".join(lines)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_verbose_1_draws_a_bar_whose_final_state_stays(case, rng, capsys):
    history = _fit(case, 1, rng)
    out = capsys.readouterr().out
    lines = out.split("\n")
    assert lines[-1] == "" and len(lines) == 5, lines  # header, bar, header, bar, ""
    width = len(str(case.steps))
    for epoch in range(2):
        assert lines[2 * epoch] == f"Epoch {epoch + 1}/2"
        states = lines[2 * epoch + 1].split("\r")
        assert states[0] == "" and len(states) >= 3  # redrawn in place: first and last state
        assert states[1].startswith(f"{0:>{width}}/{case.steps} ")  # drawn before any batch
        want = (rf"{case.steps}/{case.steps} {BAR} \d+s {STEP_TIME}"
                + re.escape(_logs_text(history, epoch)))
        assert re.fullmatch(want, states[-1]), states[-1]


def test_verbose_1_redraws_after_each_batch(rng, capsys):
    """Batches slower than the bar's refresh interval (0.1 s) each show up."""
    class Slow(Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.12)

    x, y = _data(12, rng)
    history = _model().fit(x, y, batch_size=4, epochs=1, verbose=1, callbacks=[Slow()])
    states = capsys.readouterr().out.split("\n")[1].split("\r")[1:]
    shown = [s.split("/")[0].strip() for s in states]
    assert shown[:4] == ["0", "1", "2", "3"], states
    # the running loss after the first batch is that batch's loss
    first = float(re.search(r"loss: ([0-9.]+)", states[1]).group(1))
    assert re.match(r"1/3 \u2501{6,7} +\d+s " + STEP_TIME + " - accuracy: [0-9.]+ - loss: ",
                    states[1]), states[1]
    assert np.isfinite(first) and f"loss: {history.history['loss'][0]:.4f}" in states[-1]


def test_verbose_auto_is_the_bar_and_bad_verbose_is_refused(rng, capsys):
    case = CASES[0]
    _fit(case, "auto", rng)
    assert BAR in capsys.readouterr().out
    with pytest.raises(ValueError, match="verbose must be 'auto', 0, 1 or 2; got 3"):
        _fit(case, 3, rng)
    with pytest.raises(ValueError, match="verbose must be 'auto', 0, 1 or 2; got 'loud'"):
        _model().evaluate(*_data(4, rng), verbose="loud")


def test_evaluate_verbose_modes(rng, capsys):
    x, y = _data(50, rng)
    model = _model()
    loss, acc = model.evaluate(x, y, batch_size=16)  # verbose=0 by default
    assert capsys.readouterr().out == ""
    tail = re.escape(f" - accuracy: {acc:.4f} - loss: {loss:.4f}")
    model.evaluate(x, y, batch_size=16, verbose=2)
    assert re.fullmatch(rf"4/4 - \d+s - {STEP_TIME}{tail}\n", capsys.readouterr().out)
    model.evaluate(x, y, batch_size=16, verbose=1)
    out = capsys.readouterr().out
    assert out.endswith("\n") and "Epoch" not in out
    assert re.fullmatch(rf"4/4 {BAR} \d+s {STEP_TIME}{tail}", out[:-1].split("\r")[-1])


def test_a_failing_epoch_closes_its_bar(rng, capsys):
    x, _ = _data(8, rng)
    model = _model()
    with pytest.raises(FloatingPointError, match="epoch 1, batch 1"):
        model.fit(np.full_like(x, np.nan), np.zeros(8, int), batch_size=4, verbose=1)
    out = capsys.readouterr().out
    assert out.startswith("Epoch 1/1\n") and out.endswith("\n")
